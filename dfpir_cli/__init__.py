"""dfpir: all-in-one image restoration with DFPIR (Tian et al., CVPR 2025).

From Python: ``from dfpir_cli import DFPIRRestorer, restore_image`` (see :mod:`dfpir_cli.api` and docs/api.md). They
are imported on first use, so ``import dfpir_cli.model`` stays as light as the network itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["DFPIRRestorer", "DfpirError", "__version__", "restore_image"]

if TYPE_CHECKING:
    from .api import DFPIRRestorer, restore_image
    from .errors import DfpirError


def __getattr__(name: str) -> object:
    """The API's names, imported when first asked for (PEP 562)."""
    if name in ("DFPIRRestorer", "restore_image"):
        from . import api

        return getattr(api, name)
    if name == "DfpirError":
        from .errors import DfpirError

        return DfpirError
    raise AttributeError(f"module 'dfpir_cli' has no attribute {name!r}")
