"""PFLlib dataset folders (what PFLlib's dataset/generate_*.py write) as a data source.

WARNING: PFLlib stores every client file as an .npz holding a *pickled* dict, and unpickling
runs whatever code the file names. Point dataset.path only at folders you generated yourself
or otherwise trust.

Layout of a folder:

    config.json        num_clients, num_classes, non_iid, balance, partition, alpha, ...
    train/<k>.npz      client k's training samples, k = 0 .. num_clients - 1
    test/<k>.npz       client k's test samples

where each file's `data` entry is a pickled {'x': array, 'y': array}. The clients come as
PFLlib made them: client k's train and test samples, in file order, are client k's here.

Inputs are kept as stored, so results line up with PFLlib's:
- float x (images, already normalized by PFLlib, N x C x H x W; also HAR-like features) are
  kept as float32 and never normalized again;
- integer x are token ids (Shakespeare, AG News). PFLlib's AG News stores each row as an
  (ids, length) pair; the ids are taken (they are already padded to one length). The
  vocabulary size is the largest id in the folder (train and test) + 1, so that every id has
  an embedding row.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flayer.config.schema import DatasetConfig
from flayer.data.cache import Memo
from flayer.data.source import DATASETS, DataSource, DataSpec, Pool
from flayer.data.split import ClientSplit
from flayer.util.errors import DataError, reading

CONFIG = "config.json"
PARTS = ("train", "test")
# config.json entry with each client's (label, count) pairs, as PFLlib's save_file writes it
STATISTIC = "Size of samples for labels in clients"
REGENERATE = "generate the folder again with PFLlib's dataset/generate_*.py"

# decoding a folder is slow: its clients' sizes are kept from the first read
_SIZES: Memo[list[tuple[int, int]]] = Memo(
    "(train, test) samples per client of a PFLlib folder", key=("folder fingerprint",))


def _ids(row: Any) -> Any:
    """An (ids, length) pair -> its ids; any other row is the ids themselves."""
    if isinstance(row, Sequence | np.ndarray) and len(row) == 2 and \
            isinstance(row[0], Sequence | np.ndarray):
        return row[0]
    return row


def _as_token_rows(x: np.ndarray, file: Path) -> np.ndarray:
    """Object rows (id sequences, or (ids, length) pairs as tuples or as the two columns of
    an n x 2 object array) -> int64 ids."""
    rows = [_ids(row) for row in x]
    try:
        ids = np.array(rows)
    except ValueError:
        raise DataError(f"{file}: token rows have different lengths; pad them to one length "
                        "(PFLlib's generators do)") from None
    if ids.dtype.kind not in "iub" or ids.ndim != 2:
        raise DataError(f"{file}: x holds {ids.dtype} rows of shape {ids.shape[1:]}, expected "
                        "float inputs, integer token ids or (ids, length) pairs")
    return ids.astype(np.int64)


def _inputs(x: Any, file: Path) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    if x.dtype.kind in "iub":
        return x.astype(np.int64, copy=False)
    if x.dtype.kind == "O" and len(x):
        return _as_token_rows(x, file)
    raise DataError(f"{file}: x is {x.dtype} of shape {x.shape}, expected float inputs, "
                    "integer token ids or (ids, length) pairs")


def _labels(y: Any, file: Path) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and
                                                     not np.all(np.mod(y, 1) == 0)):
        raise DataError(f"{file}: y is {y.dtype} of shape {y.shape}, expected integer labels")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"{file}: negative label {int(y.min())}")
    return y


def read_client_file(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One PFLlib client file -> (x, y); x float32 or int64 ids, y int64. Unpickles the file."""
    with reading(file, "a PFLlib client file (an .npz whose 'data' entry is a pickled dict "
                 "with 'x' and 'y')", REGENERATE):
        try:
            with np.load(file, allow_pickle=True) as npz:
                data = npz["data"].tolist()
        except (AttributeError, ImportError) as exc:  # a pickle naming what is not here
            raise ValueError(str(exc)) from None
    if not isinstance(data, dict) or "x" not in data or "y" not in data:
        raise DataError(f"{file}: 'data' is not a dict with 'x' and 'y'")
    x, y = _inputs(data["x"], file), _labels(data["y"], file)
    if len(x) != len(y):
        raise DataError(f"{file}: {len(x)} inputs but {len(y)} labels")
    if len(y) == 0:
        raise DataError(f"{file} holds no samples; every client needs train and test samples")
    return x, y


class PFLlibFolder(DataSource):
    """A PFLlib folder; its clients are used as they are (no partitioner)."""

    name = "pfllib"
    partitioned = False
    tokens = None  # a folder may hold images or token ids

    def __init__(self, cfg: DatasetConfig) -> None:
        super().__init__(cfg)
        self._spec: DataSpec | None = None
        self._max_label: int | None = None

    @property
    def root(self) -> Path:
        if not self.cfg.path:
            raise DataError("the pfllib dataset needs dataset.path: a PFLlib dataset folder "
                            "(with config.json, train/ and test/)")
        return Path(os.path.expanduser(self.cfg.path))

    def _files(self) -> list[tuple[Path, Path]]:
        """(train file, test file) per client, in client order; checks the layout."""
        root = self.root
        if not root.is_dir():
            raise DataError(f"PFLlib folder {root} does not exist; generate it with PFLlib's "
                            "dataset/generate_*.py and set dataset.path to it")
        found: dict[str, dict[int, Path]] = {}
        for part in PARTS:
            if not (root / part).is_dir():
                raise DataError(f"PFLlib folder {root} has no {part}/ folder")
            found[part] = {int(f.stem): f for f in (root / part).glob("*.npz")
                           if f.stem.isdigit() and f.is_file()}
        ids = set(found["train"]) | set(found["test"])
        if not ids:
            raise DataError(f"PFLlib folder {root}: train/ and test/ hold no <id>.npz files")
        count = max(ids) + 1
        missing = [f"{part}/{k}.npz" for k in range(count) for part in PARTS
                   if k not in found[part]]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DataError(f"PFLlib folder {root} lacks {', '.join(missing[:5])}{more}; "
                            f"clients 0..{count - 1} each need train/<id>.npz and test/<id>.npz")
        return [(found["train"][k], found["test"][k]) for k in range(count)]

    def _config(self) -> dict[str, Any]:
        file = self.root / CONFIG
        if not file.is_file():
            raise DataError(f"PFLlib folder {self.root} lacks {CONFIG} (PFLlib writes it with "
                            "the client files)")
        try:
            config = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{file} is not readable JSON: {exc}") from None
        if not isinstance(config, dict):
            raise DataError(f"{file} does not hold a JSON object")
        return config

    @classmethod
    def static_spec(cls, cfg: DatasetConfig) -> None:
        """Learnt from the folder: its sample shape, classes and largest token id."""
        return None

    def check(self) -> None:
        files, config = self._files(), self._config()
        declared = config.get("num_clients")
        if declared is not None and declared != len(files):
            raise DataError(f"{self.root / CONFIG} says num_clients={declared}, but train/ and "
                            f"test/ hold {len(files)} clients; the folder is incomplete")

    def num_clients(self) -> int:
        return len(self._files())

    def fingerprint(self) -> str:
        """Names and sizes of the client files, plus config.json's content (its per-client
        label counts tell regenerated folders apart)."""
        parts = [f"{f.parent.name}/{f.name}:{f.stat().st_size}"
                 for pair in self._files() for f in pair]
        config = json.dumps(self._config(), sort_keys=True)
        parts.append(hashlib.sha256(config.encode()).hexdigest())
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def _read(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every file, in pool order: client 0 train, client 0 test, client 1 train, ..."""
        xs, ys, sizes = [], [], []
        for train, test in self._files():
            (xa, ya), (xb, yb) = read_client_file(train), read_client_file(test)
            xs += [xa, xb]
            ys += [ya, yb]
            sizes.append((len(ya), len(yb)))
        _SIZES.put((self.fingerprint(),), sizes)
        return xs, ys

    def _sizes(self) -> list[tuple[int, int]]:
        def read() -> list[tuple[int, int]]:
            _, ys = self._read()  # client 0 train, client 0 test, client 1 train, ...
            return [(len(a), len(b)) for a, b in zip(ys[::2], ys[1::2], strict=True)]

        return _SIZES.get((self.fingerprint(),), read)

    def num_samples(self) -> int:
        """From config.json's per-client label counts where present (no decoding)."""
        try:
            total = sum(int(count) for client in self._config()[STATISTIC]
                        for _, count in client)
        except (KeyError, TypeError, ValueError):
            total = 0
        return total if total > 0 else sum(a + b for a, b in self._sizes())

    def load(self) -> Pool:
        xs, ys = self._read()
        kinds = {x.dtype for x in xs}
        shapes = {x.shape[1:] for x in xs}
        if len(kinds) > 1 or len(shapes) > 1:
            raise DataError(f"PFLlib folder {self.root}: clients' x differ in type or sample "
                            f"shape ({sorted(map(str, kinds))}, {sorted(shapes)})")
        y = np.concatenate(ys)
        self._max_label = int(y.max())
        declared = self._config().get("num_classes")
        if isinstance(declared, int) and self._max_label >= declared:
            raise DataError(f"PFLlib folder {self.root}: label {self._max_label} found, but "
                            f"{CONFIG} says num_classes={declared}")
        return Pool(x=np.concatenate(xs), y=y)

    def fixed_splits(self) -> list[ClientSplit]:
        """Client k's rows of the pool: its train file's samples, then its test file's."""
        splits, start = [], 0
        for n_train, n_test in self._sizes():
            middle, end = start + n_train, start + n_train + n_test
            splits.append(ClientSplit(train=np.arange(start, middle, dtype=np.int64),
                                      test=np.arange(middle, end, dtype=np.int64)))
            start = end
        return splits

    def _num_classes(self) -> int:
        declared = self._config().get("num_classes")
        if isinstance(declared, int) and declared > 0:
            return declared
        if self._max_label is None:
            self.load()
        assert self._max_label is not None
        return self._max_label + 1

    def _spec_of(self, x: np.ndarray) -> DataSpec:
        tokens = x.dtype.kind in "iu"
        return DataSpec(input_shape=tuple(x.shape[1:]), num_classes=self._num_classes(),
                        vocab_size=int(x.max()) + 1 if tokens else None)

    def fit(self, x: np.ndarray, train: np.ndarray, folder: Path) -> None:
        """Shape, classes and (for token ids) the vocabulary size over the whole pool."""
        self._spec = self._spec_of(x)

    @property
    def spec(self) -> DataSpec:
        if self._spec is None:  # not fitted yet: read the folder
            self._spec = self._spec_of(self.load().x)
        return self._spec

    def pixel_range(self) -> tuple[float, float] | None:
        """PFLlib stores images normalized to [-1, 1]."""
        return None if self.spec.vocab_size is not None else (-1.0, 1.0)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """float32 as stored (PFLlib normalized the images already); token ids as int64."""
        return x.to(torch.float32) if x.is_floating_point() else x.to(torch.int64)


DATASETS.register("pfllib")(PFLlibFolder)
