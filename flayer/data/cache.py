"""On-disk cache of decoded pools and client splits, keyed by everything that shapes them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from flayer.atomic import write_atomic


def cache_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def save_arrays_atomic(file: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz that concurrent readers see either not at all or whole."""
    write_atomic(file, lambda f: np.savez(f, **arrays))


def save_array_atomic(file: Path, array: np.ndarray) -> None:
    write_atomic(file, lambda f: np.save(f, array))
