"""Scoring restorations: PSNR/SSIM, classic baselines, running a checkpoint over test sets."""
