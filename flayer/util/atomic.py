"""Atomic file replacement: readers (other processes, a restarted node) see either the old
file or the whole new one, never a partial write."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# what a file written with open() gets: mkstemp makes its file for the owner alone (0600)
FILE_MODE = 0o666 & ~_umask()


def write_atomic(file: Path, write: Callable[[BinaryIO], None], *, durable: bool = False
                 ) -> None:
    """Write through a temporary file in the same folder, then rename it over `file`;
    `durable` also flushes it to disk first, so the new state survives a crash."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".tmp-", suffix=file.suffix)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
