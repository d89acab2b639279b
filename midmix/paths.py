"""Where the data directory is when nobody says: ``$MIDMIX_DATA_DIR``, else ``./midmix-data``."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "MIDMIX_DATA_DIR"
DEFAULT_DATA_DIR = "midmix-data"


def default_data_dir() -> Path:
    """The data directory every command and the service use unless given one."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
