"""Where clients' personal state lives between messages.

- Simulation: the client state store, one file per client in a folder of the run's own
  (`<run folder>/state`, or under `backend.state_dir` in a subfolder named after the run
  folder). Executors read a client's file before serving it and replace it after, so no
  process holds the personal state of clients it is not serving, and a later process (a
  resumed run) finds it by the run folder alone.
- Deployment: a SuperNode keeps its client's state in its memory (Flower's `context.state`)
  and, with node config `state-dir`, copies on its disk (`NodeStates`), so that a restarted
  SuperNode keeps what its client learned and a run continued from a checkpoint finds the
  state its client had at that checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from flayer.state.personal import Personal, load_state, save_state
from flayer.util.errors import RunError

STORE_FOLDER = "state"  # inside the run folder, without backend.state_dir
_PATTERN = "client-*.npz"


def run_key(run_dir: Path) -> str:
    """A run folder's key: its name and a hash of its absolute path (two runs never share
    one, and a later process finds it from the folder alone)."""
    run_dir = Path(run_dir).expanduser().resolve()
    return f"{run_dir.name}-{hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]}"


def store_root(run_dir: Path, state_dir: str | None) -> Path:
    """The run's store: inside its folder, or under state_dir in a folder named by the run
    folder's key."""
    if not state_dir:
        return Path(run_dir).expanduser().resolve() / STORE_FOLDER
    return Path(os.path.expanduser(state_dir)).resolve() / run_key(run_dir)


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
        file = self.file(partition_id)
        try:
            save_state(file, state, durable=False)
        except OSError as exc:  # e.g. a full disk: the run cannot keep its clients' state
            raise RunError(f"cannot write the client state file {file} ({exc.strerror or exc});"
                           f" make room in {self.root.parent} (or move it: backend.state_dir), "
                           "then continue the run from its last checkpoint (resume=RUN_DIR)"
                           ) from None

    def files(self) -> list[Path]:
        """Every client's file, in partition-id order."""
        return sorted(self.root.glob(_PATTERN)) if self.root.is_dir() else []

    def clear(self) -> int:
        """Remove every client file (a fresh run); returns how many there were."""
        files = self.files()
        for f in files:
            f.unlink()
        return len(files)

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.files())


Stamp = tuple[int, int]  # (server round, 0 for a train message / 1 for an evaluate message)


class NodeStates:
    """A SuperNode's copies of its client's state (node config `state-dir`) for one run:
    `<state-dir>/<run key>/partition-<id>/<round>-<0|1>.npz`, one per message it served.

    A node that lost its memory (restarted, or the run continued by a new Flower run) restores
    the newest state written before the message it serves: after a restart that is its last
    one; in a run continued from the checkpoint of round r, states written after r (by the
    round that did not finish) come later than the message and are passed over. States older
    than the one the newest checkpoint needs are removed."""

    def __init__(self, state_dir: str, key: str, partition_id: int) -> None:
        self.folder = Path(os.path.expanduser(state_dir)) / key / f"partition-{partition_id}"

    def file(self, stamp: Stamp) -> Path:
        return self.folder / f"{stamp[0]:06d}-{stamp[1]}.npz"

    def stamps(self) -> list[Stamp]:
        if not self.folder.is_dir():
            return []
        out = []
        for f in self.folder.glob("*-*.npz"):
            r, _, k = f.stem.partition("-")
            if r.isdigit() and k in ("0", "1"):  # other files there are not the node's
                out.append((int(r), int(k)))
        return sorted(out)

    def before(self, stamp: Stamp) -> Personal | None:
        """The newest state written before the message stamped `stamp`."""
        earlier = [s for s in self.stamps() if s < stamp]
        return load_state(self.file(earlier[-1])) if earlier else None

    def latest(self) -> Personal | None:
        stamps = self.stamps()
        return load_state(self.file(stamps[-1])) if stamps else None

    def save(self, stamp: Stamp, state: Personal, checkpoint_round: int) -> None:
        """Write this message's state (durably), then drop what no resume can need: states
        older than the newest one written up to the last checkpoint."""
        save_state(self.file(stamp), state)
        stamps = self.stamps()
        needed = [s for s in stamps if s[0] <= checkpoint_round]
        for old in stamps[: stamps.index(needed[-1])] if needed else []:
            self.file(old).unlink(missing_ok=True)
