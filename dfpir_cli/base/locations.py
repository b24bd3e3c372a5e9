"""Where dfpir keeps files of its own: converted official checkpoints and the datasets folder.

- ``$DFPIR_CACHE``, else ``$XDG_CACHE_HOME/dfpir``, else ``~/.cache/dfpir`` (on every platform): dfpir's cache;
  the authors' converted checkpoints live in its ``official/`` folder.
- ``$DFPIR_DATA``, else ``<dfpir cache>/data``: the datasets folder that ``dfpir eval`` and ``dfpir train``
  read when no data option is given (one sub-folder per dataset: ``SOTS/``, ``Rain100L/``, ...).

Checkpoints fetched from the Hugging Face Hub stay in the Hub's own cache (``HF_HOME``).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DFPIR_CACHE"
DATA_ENV = "DFPIR_DATA"


def dfpir_cache_dir() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "dfpir"


def data_dir() -> Path:
    """The datasets folder: ``$DFPIR_DATA``, else ``<dfpir cache>/data``."""
    explicit = os.environ.get(DATA_ENV)
    return Path(explicit).expanduser() if explicit else dfpir_cache_dir() / "data"


def data_dir_origin() -> str:
    """How :func:`data_dir` was chosen, for messages."""
    return f"${DATA_ENV}" if os.environ.get(DATA_ENV) else f"the default; set ${DATA_ENV} to use another folder"
