"""Shakespeare from the Hugging Face hub (flwrlabs/shakespeare): LEAF's next-character task as
LEAF's own preprocessing made it (Caldas et al., "LEAF: A Benchmark for Federated Settings").

The hub's data: one split `train`, one row per sample, the columns `character_id` (a speaking
role: a character of a play, LEAF's user), `x` (80 characters of the role's text) and `y` (the
character after them): LEAF's 1,129 roles, about 4.2 M rows (LEAF's counts). A role's rows
are taken to be its windows in the order of its text, each one character after the last, as
LEAF writes them (every window of the role's text, in order).

How it relates to dataset=shakespeare (the plays' texts, offline, without the hub): the same
task, with the same vocabulary (flayer.data.characters: a text gives the same ids from either
source), the same samples (every 80-character window of a role's text and the character after
it) and the same split in time per role; a role's text from the plays gives the same clients
here. The roles differ: LEAF parsed Gutenberg's complete works in one file (pg100), the local
source parses the per-play texts of the `shakespeare` package, so the names, the texts and the
counts differ (1,129 roles here, 811 with a test window there). Use this one for LEAF's data
itself, the local one where the hub cannot be reached.

The clients: partition=natural (its default column, `character_id`, is the only one), so that
`num_clients` takes a sample of the roles seeded by `seed`, as the local source does. Each
role's windows are split in time (`time_gap`): the first floor(f n) train, those that start
after the last training target test, f = partition.train_fraction (LEAF's and the local
source's 0.8: partition.train_fraction=0.8); a role too small for a test window (fewer than
321 windows at 0.75, 401 at 0.8) is left out. Label schemes run on it too, but their clients
are then shares of the pool, not roles.

Characters outside LEAF's vocabulary (LEAF's encoding gives them -1) are read as spaces, so
that every window keeps its 80 characters; how many there were is logged. `dataset.max_len`
must be 80 (the hub's windows) and `dataset.vocab` null.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from flayer.config.schema import DatasetConfig
from flayer.data.characters import VOCAB, encode_codes
from flayer.data.hub import Storage, locate, read_column
from flayer.data.source import DATASETS, DataSource, DataSpec, Pool
from flayer.util.errors import DataError, require

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

WINDOW = 80  # the hub's samples: LEAF's 80-character windows
RULES_VERSION = "hub-windows-1"  # part of the pool's cache key: how rows become ids
BLOCK = 65_536  # rows encoded at a time


def encode_column(column: pa.ChunkedArray, length: int, where: str) -> tuple[np.ndarray, int]:
    """A string column whose every value holds `length` characters -> uint8 ids N x length
    (characters outside the vocabulary as spaces), and how many were outside."""
    import pyarrow.compute as pc

    if column.null_count:
        raise DataError(f"{where}: {column.null_count} samples have no value")
    sizes = np.asarray(pc.utf8_length(column).to_numpy())
    bad = np.flatnonzero(sizes != length)
    if bad.size:
        raise DataError(f"{where}: row {int(bad[0])} holds {int(sizes[bad[0]])} characters; "
                        f"every value must hold {length} (LEAF's windows and their next "
                        "character)")
    out = np.empty((len(column), length), dtype=np.uint8)
    outside = 0
    for start in range(0, len(column), BLOCK):
        text = "".join(column.slice(start, BLOCK).to_pylist())
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).reshape(-1, length)
        out[start:start + len(codes)], count = encode_codes(codes)
        outside += count
    return out, outside


class ShakespeareHub(DataSource):
    """The hub's windows, pooled; partition=natural makes the roles the clients."""

    name = "shakespeare_hub"
    hub_id = "flwrlabs/shakespeare"
    columns = {"x": "x", "y": "y"}
    client_columns = ("character_id",)
    tokens = True  # character ids: no image shift applies

    @functools.cached_property
    def data(self) -> Storage:
        """Where the windows are: found on first use, so that a bad dataset.path is reported
        by `check`."""
        return locate(self.hub_id, self.cfg.path, images=False)

    @classmethod
    def static_spec(cls, cfg: DatasetConfig) -> DataSpec:
        """Fixed: the hub's 80-character windows, LEAF's 80-character vocabulary."""
        return DataSpec(input_shape=(WINDOW,), num_classes=len(VOCAB), vocab_size=len(VOCAB))

    def check(self) -> None:
        require(self.cfg.max_len == WINDOW, "dataset.max_len", self.cfg.max_len,
                f"must be {WINDOW} for {self.name}: the hub's samples are windows of {WINDOW} "
                "characters")
        require(self.cfg.vocab is None, "dataset.vocab", self.cfg.vocab,
                f"must be null for {self.name}: its vocabulary is LEAF's 80 characters")
        self.data.check()

    def num_samples(self) -> int:
        return self.data.num_rows()

    def fingerprint(self) -> str:
        text = f"{self.data.fingerprint()}|{RULES_VERSION}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def load(self) -> Pool:
        xs, ys, outside = [], [], 0
        for split in self.data.splits(self.columns):
            where = f"{self.name} split {split.name!r}"
            x, in_x = encode_column(split.table.column("x"), WINDOW, f"{where}, column x")
            y, in_y = encode_column(split.table.column("y"), 1, f"{where}, column y")
            xs.append(x)
            ys.append(y[:, 0].astype(np.int64))
            outside += in_x + in_y
        if not xs:
            raise DataError(f"{self.name}: no samples in {self.data.hub_id}")
        if outside:
            log.info("%s: %d characters outside LEAF's vocabulary read as spaces", self.name,
                     outside)
        return Pool(x=np.concatenate(xs), y=np.concatenate(ys))

    def column(self, name: str) -> np.ndarray:
        return read_column(self.data, name)

    def time_gap(self) -> int:
        """A role's rows are its overlapping windows in text order: split in time."""
        return WINDOW

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Stored uint8 ids -> int64 ids."""
        return x.to(torch.int64)


DATASETS.register("shakespeare_hub")(ShakespeareHub)
