"""A run's checkpoint: everything needed to continue after round r with the numbers an
uninterrupted run would have had.

`<run folder>/checkpoints/round-<r>/` holds the server's state (`server.npz`: the model
version, the global arrays and any server-side arrays of the method) and, in simulation, a
snapshot of the client state store as of round r (`clients/`: hard links to the store's files,
so a checkpoint copies no data; the store replaces a file by renaming a new one over it, which
leaves the linked snapshot untouched). The rows of metrics.csv and clients.csv up to round r
are the round records; a resumed run drops the rows after r.

A checkpoint is written in a temporary folder, flushed, renamed into place, and only then named
in `checkpoints/LATEST` (replaced atomically): a crash at any point leaves the previous
checkpoint the valid one. Older checkpoints are pruned (`checkpoint_keep`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flayer.atomic import write_atomic
from flayer.state.store import ClientStore, run_key

FOLDER = "checkpoints"
LATEST = "LATEST"
SERVER = "server.npz"
CLIENTS = "clients"
_META = "__meta__"


@dataclass
class ServerState:
    """What the server holds after a round."""

    round: int
    version: int
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


def _name(server_round: int) -> str:
    return f"round-{server_round:06d}"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links there
        shutil.copy2(src, dst)


class Checkpoints:
    """The checkpoints of one run folder."""

    def __init__(self, run_dir: Path, keep: int = 1) -> None:
        self.root = Path(run_dir) / FOLDER
        self.keep = keep

    def latest(self) -> Path | None:
        """The folder of the last complete checkpoint, or None."""
        pointer = self.root / LATEST
        if not pointer.is_file():
            return None
        folder = self.root / pointer.read_text().strip()
        return folder if (folder / SERVER).is_file() else None

    def save(self, state: ServerState, store: ClientStore | None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / _name(state.round)
        tmp = self.root / f".tmp-{_name(state.round)}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        meta = np.array(json.dumps({"round": state.round, "version": state.version,
                                    "meta": state.meta}))
        write_atomic(tmp / SERVER, lambda f: np.savez(f, **{_META: meta}, **state.arrays),
                     durable=True)
        if store is not None:
            clients = tmp / CLIENTS
            clients.mkdir()
            for file in store.files():
                _link_or_copy(file, clients / file.name)
        _fsync_dir(tmp)
        shutil.rmtree(final, ignore_errors=True)  # a checkpoint of this round not yet named
        os.replace(tmp, final)
        _fsync_dir(self.root)
        write_atomic(self.root / LATEST, lambda f: f.write(final.name.encode()), durable=True)
        self.prune(final)
        return final

    def prune(self, current: Path) -> None:
        """Keep the newest `keep` checkpoints (the current one always)."""
        done = sorted(p for p in self.root.glob("round-*") if p.is_dir() and p != current)
        for old in done[: max(0, len(done) - (self.keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
        for tmp in self.root.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def load(folder: Path) -> ServerState:
        with np.load(folder / SERVER, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k != _META}
            meta = json.loads(str(npz[_META]))
        return ServerState(round=int(meta["round"]), version=int(meta["version"]),
                           arrays=arrays, meta=meta["meta"])

    @staticmethod
    def restore_clients(folder: Path, store: ClientStore) -> int:
        """Put the store back as it was at the checkpoint; returns the number of clients."""
        store.clear()
        store.root.mkdir(parents=True, exist_ok=True)
        files = ClientStore(folder / CLIENTS).files()
        for file in files:
            _link_or_copy(file, store.root / file.name)
        return len(files)


class Checkpointing:
    """How a run keeps checkpoints: where, how often, with which client store, and the
    server state it continues from (None: a run from round 0)."""

    def __init__(self, checkpoints: Checkpoints, every: int, num_rounds: int,
                 store: ClientStore | None, resume_from: ServerState | None = None) -> None:
        self.checkpoints = checkpoints
        self.every = every
        self.num_rounds = num_rounds
        self.store = store
        self.resume_from = resume_from
        self.last_round = -1 if resume_from is None else resume_from.round  # newest saved

    @property
    def run_key(self) -> str:
        """The run folder's key (SuperNodes keep their state under it)."""
        return run_key(self.checkpoints.root.parent)

    def start_round(self) -> int:
        return 0 if self.resume_from is None else self.resume_from.round + 1

    def due(self, server_round: int) -> bool:
        return server_round % self.every == 0 or server_round == self.num_rounds

    def save(self, state: ServerState) -> None:
        if self.due(state.round):
            self.checkpoints.save(state, self.store)
            self.last_round = state.round
