"""Pure PyTorch modules of the DFPIR network: no file I/O, no printing."""

from .config import PRESETS, DFPIRConfig
from .dfpir import DFPIR, restore_any_size

__all__ = ["DFPIR", "DFPIRConfig", "PRESETS", "restore_any_size"]
