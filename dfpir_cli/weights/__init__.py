"""Checkpoints: the config.json + model.safetensors format, prompts, the Hub, the authors' published files."""
