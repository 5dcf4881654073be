"""Where clients' personal state lives between messages.

- Simulation: the client state store, one file per client in a folder of the run's own
  (`<run folder>/state`, or under `backend.state_dir` in a subfolder named after the run
  folder). Executors read a client's file before serving it and replace it after, so no
  process holds the personal state of clients it is not serving, and a later process (a
  resumed run) finds it by the run folder alone.
- Deployment: a SuperNode keeps its client's state in its memory (Flower's `context.state`)
  and, with node config `state-dir`, a copy on its disk (`state_file`), so that a restarted
  SuperNode keeps what its client learned.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from flayer.state.personal import Personal, load_state, save_state

STORE_FOLDER = "state"  # inside the run folder, without backend.state_dir
_PATTERN = "client-*.npz"


def store_root(run_dir: Path, state_dir: str | None) -> Path:
    """The run's store: inside its folder, or under state_dir in a folder named after the run
    folder (its name and a hash of its absolute path, so two runs never share one)."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not state_dir:
        return run_dir / STORE_FOLDER
    tag = hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]
    return Path(os.path.expanduser(state_dir)).resolve() / f"{run_dir.name}-{tag}"


class ClientStore:
    """One `.npz` per client under `root`, replaced atomically (not flushed to disk: a run
    that stops resumes from its checkpoint, not from these files)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def file(self, partition_id: int) -> Path:
        return self.root / f"client-{partition_id:06d}.npz"

    def load(self, partition_id: int) -> Personal:
        """The client's state; empty before its first message."""
        return load_state(self.file(partition_id)) or Personal()

    def save(self, partition_id: int, state: Personal) -> None:
        save_state(self.file(partition_id), state, durable=False)

    def clear(self) -> int:
        """Remove every client file (a fresh run); returns how many there were."""
        files = list(self.root.glob(_PATTERN)) if self.root.is_dir() else []
        for f in files:
            f.unlink()
        return len(files)

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.glob(_PATTERN)) if self.root.is_dir() \
            else 0


def state_file(state_dir: str, run_id: int, partition_id: int) -> Path:
    """A SuperNode's copy of its client's state (node config `state-dir`), per Flower run."""
    return Path(os.path.expanduser(state_dir)) / f"run-{run_id}" / f"partition-{partition_id}.npz"
