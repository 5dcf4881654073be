"""A client's personal state and its file: what the method keeps across rounds (arrays and
metadata) and, apart from it, the app's bookkeeping (which global model version the state is
set up from). One `.npz` per client, replaced atomically."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flayer.util.atomic import write_atomic
from flayer.util.errors import reading

META_KEY = "__meta__"  # the JSON-encoded metadata inside the .npz


@dataclass
class Personal:
    """What a client keeps between messages: the method's arrays and metadata, and apart from
    them the app's own bookkeeping (the global model version the state was set up from)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # the method's
    version: int | None = None  # the app's; None before the first global model


def save_state(file: Path, state: Personal, *, durable: bool = True) -> None:
    """Arrays and metadata in one file, replaced atomically (and with `durable` flushed to
    disk first): a crash leaves the old state or the new one."""
    if META_KEY in state.arrays:
        raise ValueError(f"{META_KEY} is reserved")
    encoded = np.array(json.dumps({"meta": state.meta, "version": state.version},
                                  default=_plain))
    write_atomic(file, lambda f: np.savez(f, **{META_KEY: encoded}, **state.arrays),
                 durable=durable)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        raise TypeError("bytes in personal metadata cannot be saved to a state file")
    raise TypeError(f"cannot save {type(value).__name__} in personal metadata")


STATE_FILE = "a client state file (an .npz of arrays and its metadata)"
# a client's state is the run's: without it the run cannot give its numbers
RESTORE = ("the run cannot go on without it; continue the run from a checkpoint taken before "
           "the damage (resume=RUN_DIR verifies the checkpoint first)")


def load_state(file: Path, fix: str = RESTORE) -> Personal | None:
    """The saved state, or None when this node has none for this run and partition;
    DamagedFile (saying `fix`) for a file that is not a whole state file."""
    if not file.is_file():
        return None
    with reading(file, STATE_FILE, fix):
        with np.load(file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k != META_KEY}
            saved = json.loads(str(npz[META_KEY]))
        return Personal(arrays=arrays, meta=dict(saved["meta"]), version=saved["version"])


def state_hash(arrays: dict[str, np.ndarray]) -> int:
    """A 48-bit fingerprint of named arrays (exact as a float, so it survives a CSV)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        h.update(value.tobytes())
    return int.from_bytes(h.digest()[:6], "big")
