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

Each checkpoint lists what it holds in `manifest.json` (every file's size and SHA-256), so a
continued run verifies it before any round runs: a checkpoint damaged later (a disk error, a
cut copy, a hand edit) is refused by the name of its damaged file, or passed over for an
older whole one where that is safe (`usable`). A file the store did not rewrite since the last
checkpoint is the same file (a hard link): its digest is taken over, so a checkpoint hashes
only the states that changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flayer.state.personal import load_state
from flayer.state.store import ClientStore, run_key
from flayer.util.atomic import write_atomic
from flayer.util.errors import DamagedFile, reading

log = logging.getLogger(__name__)

FOLDER = "checkpoints"
LATEST = "LATEST"
SERVER = "server.npz"
CLIENTS = "clients"
MANIFEST = "manifest.json"
_META = "__meta__"
REFUSED = ("the run folder is left as it is; continue from another copy of the run folder, or "
           "start the run again in a new folder")
Stat = tuple[int, int, int]  # a file's inode, size and modification time (ns)


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


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with reading(file, "a checkpoint file", REFUSED), open(file, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _held(folder: Path) -> list[Path]:
    """The files a checkpoint holds (its manifest aside): the server state and the clients'."""
    files = [folder / SERVER] if (folder / SERVER).is_file() else []
    clients = folder / CLIENTS
    return files + (sorted(p for p in clients.iterdir() if p.is_file())
                    if clients.is_dir() else [])


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
        self._digests: dict[Stat, str] = {}  # the last manifest's digests by file stat

    def latest(self) -> Path | None:
        """The folder of the last complete checkpoint, or None."""
        pointer = self.root / LATEST
        if not pointer.is_file():
            return None
        folder = self.root / pointer.read_text(errors="replace").strip()
        return folder if (folder / SERVER).is_file() else None

    def usable(self, fallback: bool) -> Path | None:
        """The checkpoint a continued run starts from, verified: the one LATEST names, else
        (with `fallback`, where a run's state is all in its checkpoints) the newest older
        whole one, saying which was passed over and why. None where the run has no
        checkpoint at all; DamagedFile where none that may be used is whole."""
        pointer = self.root / LATEST
        folders = sorted((p for p in self.root.glob("round-*") if p.is_dir()), reverse=True)
        if not pointer.exists() and not folders:
            return None
        problems: list[DamagedFile] = []
        named = self._named(pointer)
        if isinstance(named, DamagedFile):
            problems.append(named)
            named = None
        candidates = ([named] if named is not None else []) + [p for p in folders if p != named]
        for folder in candidates if fallback or named is None else candidates[:1]:
            problem = self.verify(folder)
            if problem is None:
                if problems:
                    log.warning("%s: %s; continuing from the older whole checkpoint %s",
                                problems[0].file, problems[0].problem, folder.name)
                return folder
            problems.append(problem)
            if not fallback:
                break
        first = problems[0]
        older = len(problems) - 1
        more = (f" ({older} older checkpoint{'s' if older > 1 else ''} damaged as well)"
                if older else "")
        raise DamagedFile(first.file, first.problem + more, REFUSED)

    def _named(self, pointer: Path) -> Path | None | DamagedFile:
        """The checkpoint folder LATEST names (None: no LATEST file)."""
        if not pointer.exists():
            return None
        with reading(pointer, "a checkpoint pointer", REFUSED):
            name = pointer.read_text(encoding="ascii").strip()
        folder = self.root / name
        if not name.startswith("round-") or "/" in name or not folder.is_dir():
            return DamagedFile(pointer, f"names {name[:40]!r}, which is no checkpoint folder "
                               f"in {self.root}", REFUSED)
        return folder

    def verify(self, folder: Path) -> DamagedFile | None:
        """What is wrong with a checkpoint (None: it is whole): every file its manifest lists
        present with its size and digest, nothing more in clients/, and the server state
        readable. A checkpoint without a manifest is checked by reading every file."""
        try:
            listed = self._read_manifest(folder)
            held = _held(folder)
            if listed is None:  # written before checkpoints had a manifest
                for file in held:
                    if file.parent.name == CLIENTS:
                        load_state(file, REFUSED)
            else:
                for rel, entry in sorted(listed.items()):
                    file = folder / rel
                    if not file.is_file():
                        return DamagedFile(file, "is missing (the checkpoint's manifest lists "
                                           "it)", REFUSED)
                    size = file.stat().st_size
                    if size != entry["size"]:
                        return DamagedFile(file, f"has {size} bytes, its checkpoint's manifest "
                                           f"says {entry['size']}", REFUSED)
                    if _sha256(file) != entry["sha256"]:
                        return DamagedFile(file, "differs from what its checkpoint's manifest "
                                           "recorded (SHA-256)", REFUSED)
                extra = sorted({str(f.relative_to(folder)) for f in held} - set(listed))
                if extra:
                    return DamagedFile(folder / extra[0], "is not listed in its checkpoint's "
                                       "manifest", REFUSED)
            self.load(folder)
        except DamagedFile as exc:
            return exc
        return None

    def _read_manifest(self, folder: Path) -> dict[str, dict[str, Any]] | None:
        file = folder / MANIFEST
        if not file.exists():
            if not (folder / SERVER).is_file():
                raise DamagedFile(folder, f"holds neither {MANIFEST} nor {SERVER}", REFUSED)
            return None
        with reading(file, "a checkpoint manifest (JSON)", REFUSED):
            files = json.loads(file.read_text(encoding="utf-8"))["files"]
            listed = {str(rel): {"size": int(e["size"]), "sha256": str(e["sha256"])}
                      for rel, e in files.items()}
        return listed

    def _write_manifest(self, folder: Path, server_round: int) -> None:
        """Every file's size and digest; a file unchanged since the last checkpoint (same
        inode, size and time) keeps its digest without being read again."""
        files, known = {}, {}
        for file in _held(folder):
            rel = str(file.relative_to(folder))
            st = file.stat()
            stat: Stat = (st.st_ino, st.st_size, st.st_mtime_ns)
            digest = self._digests.get(stat) or _sha256(file)
            known[stat] = digest
            files[rel] = {"size": st.st_size, "sha256": digest}
        self._digests = known
        text = json.dumps({"round": server_round, "files": files}, indent=0, sort_keys=True)
        write_atomic(folder / MANIFEST, lambda f: f.write(text.encode()), durable=True)

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
        self._write_manifest(tmp, state.round)
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
        with reading(folder / SERVER, "a checkpoint's server state (an .npz)", REFUSED):
            with np.load(folder / SERVER, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files if k != _META}
                meta = json.loads(str(npz[_META]))
            return ServerState(round=int(meta["round"]), version=int(meta["version"]),
                               arrays=arrays, meta=dict(meta["meta"]))

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
