"""dfpir: all-in-one image restoration with DFPIR (Tian et al., CVPR 2025)."""

__version__ = "0.1.0"
