"""Hugging Face hub datasets, read from the hub or from a local copy.

Every hub-based source reads its data through `HubData`. With `dataset.path` null the data comes
from `datasets.load_dataset(hub_id)` (the local Hugging Face cache serves it when the hub cannot
be reached); otherwise `dataset.path` is a local copy in one of these formats:

- a `save_to_disk` folder of a DatasetDict (`dataset_dict.json`) or of one Dataset
  (`state.json`, read as the split `train`);
- a folder (searched recursively) or a single file of parquet files with the hub's columns; a
  file's split is the word its name starts with (`train-00000-of-00001.parquet` -> train), or
  else the name of its folder (`train/0000.parquet` -> train);
- for image sets, an image folder `<class>/<image>` (columns `image` and `label`, whatever the
  hub calls them): sub-folders named 0, 1, ... keep their numbers as labels, other names are
  numbered in sorted order (as in `datasets`' imagefolder and torchvision's ImageFolder).

All splits are merged into one pool: `train` first, then the other splits sorted by name
(PFLlib merges train and test).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from flayer.data.cache import Memo
from flayer.util.errors import DataError, reading

if TYPE_CHECKING:
    import pyarrow as pa

LOCAL_FORMATS = (
    "a `save_to_disk` folder (DatasetDict or Dataset), a folder (or a single file) of parquet "
    "files with the hub's columns"
)
IMAGE_FOLDER_FORMAT = "an image folder <class>/<image>"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
PROBE_TIMEOUT_S = 3.0  # how long to wait for the hub's host before reading the local cache

# Once per process: every process asks the source for its size and fingerprint several times
# while it builds its clients (`flayer.data.cache.forget` drops them).
_ONLINE: Memo[bool] = Memo("whether the hub answers", key=("hub endpoint",))
_FROM_HUB: Memo[dict[str, Any]] = Memo("splits of a hub dataset", key=("hub id",))
_FROM_DISK: Memo[dict[str, Any]] = Memo("splits of a save_to_disk folder",
                                        key=("folder", "fingerprint of its files"))
_LISTINGS: Memo[tuple[list[str], list[tuple[str, int, int]]]] = Memo(
    "class folders and images of an image folder",
    key=("folder", "class folders and their modification times"))


def split_order(names: list[str]) -> list[str]:
    """The merge order of splits: train first, then the others by name."""
    return sorted(names, key=lambda name: (name != "train", name))


@dataclass(frozen=True)
class Split:
    """One split of the data; `table` has the source's column names (image, label, text)."""

    name: str
    table: pa.Table


def hub_online() -> bool:
    """Whether the hub may be asked: not switched off (HF_HUB_OFFLINE) and its host answers;
    probed once per process.

    The `datasets` library retries an unreachable hub for about half a minute before it falls
    back to its cache; a quick connection probe avoids that wait in every process."""
    import datasets

    if datasets.config.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # only the proxy knows; let the library try
    endpoint = datasets.config.HF_ENDPOINT

    def probe() -> bool:
        url = urlparse(endpoint)
        port = url.port or (80 if url.scheme == "http" else 443)
        try:
            with socket.create_connection((url.hostname or "", port), timeout=PROBE_TIMEOUT_S):
                return True
        except OSError:
            return False

    return _ONLINE.get((endpoint,), probe)


def hub_cached(hub_id: str) -> bool:
    """Whether `datasets` holds a prepared copy of hub_id in its cache (as its offline mode
    looks for it)."""
    import datasets
    from datasets.naming import camelcase_to_snakecase

    parts = hub_id.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    root = Path(os.path.expanduser(str(datasets.config.HF_DATASETS_CACHE))) / "___".join(parts)
    return any(Path(p).is_dir() for p in glob.glob(str(root / "*" / "*" / "*")))


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Switch `datasets` and `huggingface_hub` to offline mode (read the cache, no retries)."""
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _parquet_split(file: Path, root: Path) -> str:
    """A parquet file's split: the word its name starts with, else its folder's name."""
    word = re.match(r"[A-Za-z]+", file.name)
    if word:
        return word.group(0).lower()
    return file.parent.name if file.parent != root else "train"


def _has_images(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES for e in entries)


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_labels(names: list[str]) -> dict[str, int]:
    """Image-folder labels: numeric folder names keep their number, others count in sorted
    order."""
    if names and all(n.isdigit() for n in names):
        return {n: int(n) for n in names}
    return {n: i for i, n in enumerate(sorted(names))}


class HubData:
    """One hub dataset at one place: the hub itself (path None) or a local copy."""

    def __init__(self, hub_id: str, path: str | None, images: bool) -> None:
        self.hub_id = hub_id
        self.path = Path(os.path.expanduser(path)) if path else None
        self.images = images  # image sets also accept an image folder

    @property
    def formats(self) -> str:
        """The local formats this dataset accepts, for messages."""
        return LOCAL_FORMATS + (f", or {IMAGE_FOLDER_FORMAT}" if self.images else "")

    def _hint(self) -> str:
        return (
            f"give a local copy with dataset.path=: {self.formats}; for example, where the hub "
            f"is reachable: python -c \"import datasets; datasets.load_dataset("
            f"'{self.hub_id}').save_to_disk('DIR')\""
        )

    # -- where and what ------------------------------------------------------------------

    @functools.cached_property
    def kind(self) -> str:
        """hub | disk | parquet | imagefolder; raises DataError for a missing or unknown path."""
        if self.path is None:
            return "hub"
        path = self.path
        if not path.exists():
            raise DataError(f"dataset.path {path} does not exist; it must be {self.formats} "
                            f"(of {self.hub_id})")
        if path.is_file():
            if path.suffix == ".parquet":
                return "parquet"
            raise DataError(f"dataset.path {path} is a file but not a .parquet file; it must be "
                            f"{self.formats} (of {self.hub_id})")
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return "disk"
        if self.images and any(_has_images(d) for d in _class_dirs(path)):
            return "imagefolder"
        if self._parquet_files():
            return "parquet"
        raise DataError(f"dataset.path {path} holds none of the accepted formats; it must be "
                        f"{self.formats} (of {self.hub_id})")

    def check(self) -> None:
        """Cheap: the local copy's format, or that the local cache or the hub may serve it (a
        host without either learns it here, before anything asks for the data's size)."""
        if self.kind != "hub":
            return
        try:
            import datasets
        except ImportError as exc:
            raise DataError(f"reading {self.hub_id} needs the `datasets` package "
                            f"({exc}); or {self._hint()}") from None
        if hub_cached(self.hub_id):
            return
        if datasets.config.HF_HUB_OFFLINE:
            raise DataError(f"{self.hub_id} is not in the local Hugging Face cache and "
                            f"HF_HUB_OFFLINE is set; {self._hint()}")
        if not hub_online():
            raise DataError(f"cannot reach the Hugging Face hub for {self.hub_id} (offline, "
                            f"and it is not in the local Hugging Face cache); {self._hint()}")

    def num_rows(self) -> int:
        """Rows of all splits, without decoding any sample."""
        if self.kind in ("hub", "disk"):
            return sum(ds.num_rows for ds in self._dataset_dict().values())
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            total = 0
            for file in self._parquet_files():
                with self._reading(file, "a parquet file"):
                    total += pq.ParquetFile(file).metadata.num_rows
            return total
        return len(self._image_listing()[1])

    def fingerprint(self) -> str:
        """Identity of the data: the hub id and the cached copy's fingerprints, or the local
        files' names and sizes."""
        if self.kind == "hub":
            data = self._dataset_dict()
            return _digest([self.hub_id] + [f"{name}:{data[name].num_rows}:"
                                            f"{data[name]._fingerprint}" for name in sorted(data)])
        root = self.path
        assert root is not None
        if self.kind == "imagefolder":
            files = [f"{rel}:{size}" for rel, _, size in self._image_listing()[1]]
        else:
            found = (self._parquet_files() if self.kind == "parquet"
                     else sorted(p for p in root.rglob("*") if p.is_file()))
            files = [f"{f.relative_to(root) if f != root else f.name}:{f.stat().st_size}"
                     for f in found]
            # a re-saved copy may keep its sizes; its state files name the new fingerprint
            for f in found:
                if f.name == "state.json":
                    with self._reading(f, "a save_to_disk state file (UTF-8 JSON)"):
                        files.append(f.read_text(encoding="utf-8"))
        return _digest([self.kind] + files)

    # -- reading -------------------------------------------------------------------------

    def splits(self, columns: dict[str, str]) -> list[Split]:
        """All splits in merge order, with the columns named by the keys of `columns` (whose
        values are the hub's names for them; an image folder has `image` and `label`)."""
        if self.kind == "imagefolder":
            return [self._image_split()]
        if self.kind == "parquet":
            return self._parquet_splits(columns)
        data = self._dataset_dict()
        out = []
        for name in split_order(list(data)):
            ds = data[name]
            self._require(ds.column_names, columns, f"split {name!r}")
            with self._reading(self.path or self.hub_id, f"the split {name!r} of {self.hub_id}"):
                table = ds.select_columns(list(columns.values())).with_format("arrow")[:]
            out.append(Split(name, table.rename_columns(list(columns))))
        return out

    def _reading(self, file: object, what: str) -> contextlib.AbstractContextManager[None]:
        """A damaged local copy (or cached hub copy) named, with what to do about it."""
        import pyarrow as pa

        fix = (f"replace the copy with a whole one; {self._hint()}" if self.path is not None
               else f"the local Hugging Face cache of {self.hub_id} may be damaged: remove it "
                    "(huggingface-cli delete-cache, or its folder under ~/.cache/huggingface) "
                    "and load it again")
        return _arrow_reading(file, what, fix, pa.ArrowException)

    def _where(self) -> str:
        return f"dataset.path {self.path}" if self.path is not None else self.hub_id

    def _require(self, found: list[str], columns: dict[str, str], part: str) -> None:
        missing = [c for c in columns.values() if c not in found]
        if missing:
            raise DataError(
                f"{self._where()} ({part}) has no column {', '.join(missing)} (it has "
                f"{', '.join(found)}); a local copy of {self.hub_id} needs the hub's columns "
                f"{', '.join(columns.values())}"
            )

    def _dataset_dict(self) -> dict[str, Any]:
        """The splits as `datasets` Datasets (memory-mapped), once per process."""
        import datasets

        def load() -> dict[str, Any]:
            loaded = self._load_hub() if self.kind == "hub" else self._load_disk()
            if isinstance(loaded, datasets.Dataset):
                loaded = {"train": loaded}
            return dict(loaded)

        if self.kind == "hub":
            return _FROM_HUB.get((self.hub_id,), load)
        return _FROM_DISK.get((str(self.path), self.fingerprint()), load)

    def _load_disk(self) -> Any:
        import datasets

        try:
            return datasets.load_from_disk(str(self.path))
        except Exception as exc:  # a broken or foreign folder: say which one and why
            raise DataError(f"cannot read the save_to_disk folder {self.path} "
                            f"({type(exc).__name__}: {exc}); it must be {self.formats}") from None

    def _load_hub(self) -> Any:
        import datasets

        online = hub_online()
        if not online and not hub_cached(self.hub_id):
            raise DataError(f"cannot reach the Hugging Face hub for {self.hub_id} (offline, and "
                            f"it is not in the local Hugging Face cache); {self._hint()}")
        try:
            with contextlib.nullcontext() if online else _offline():
                return datasets.load_dataset(self.hub_id)
        except Exception as exc:  # network, cache or format problems all end the same way
            raise DataError(f"could not load {self.hub_id} from the Hugging Face hub "
                            f"({type(exc).__name__}: {exc}); {self._hint()}") from None

    def _parquet_files(self) -> list[Path]:
        assert self.path is not None
        if self.path.is_file():
            return [self.path]
        return sorted(p for p in self.path.rglob("*.parquet") if p.is_file())

    def _parquet_splits(self, columns: dict[str, str]) -> list[Split]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        root = self.path if self.path is not None and self.path.is_dir() else None
        by_split: dict[str, list[Path]] = {}
        for file in self._parquet_files():
            by_split.setdefault(_parquet_split(file, root or file.parent), []).append(file)
        out = []
        for name in split_order(list(by_split)):
            tables = []
            for file in by_split[name]:
                with self._reading(file, f"a parquet file with the columns of {self.hub_id}"):
                    schema = pq.read_schema(file)
                    self._require(schema.names, columns, file.name)
                    tables.append(pq.read_table(file, columns=list(columns.values())))
            table = pa.concat_tables(tables).rename_columns(list(columns))
            out.append(Split(name, table))
        return out

    def _image_listing(self) -> tuple[list[str], list[tuple[str, int, int]]]:
        """Class folders and (relative file, label, size) of every image, sorted by class
        folder then file name; re-listed when a class folder changes."""
        assert self.path is not None
        dirs = _class_dirs(self.path)

        def scan() -> tuple[list[str], list[tuple[str, int, int]]]:
            labels = class_labels([d.name for d in dirs])
            files = []
            for d in dirs:
                with os.scandir(d) as entries:
                    found = sorted(
                        (e.name, e.stat().st_size) for e in entries
                        if e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES
                    )
                files += [(f"{d.name}/{name}", labels[d.name], size) for name, size in found]
            return [d.name for d in dirs], files

        key = (str(self.path), tuple((d.name, d.stat().st_mtime_ns) for d in dirs))
        return _LISTINGS.get(key, scan)

    def _image_split(self) -> Split:
        """The image folder as one split, images stored by path like `datasets`' Image()."""
        import pyarrow as pa

        assert self.path is not None
        files = self._image_listing()[1]
        image = pa.StructArray.from_arrays(
            [pa.nulls(len(files), pa.binary()),
             pa.array([str(self.path / rel) for rel, _, _ in files], pa.string())],
            names=["bytes", "path"],
        )
        label = pa.array([lab for _, lab, _ in files], pa.int64())
        return Split("train", pa.table({"image": image, "label": label}))


@contextlib.contextmanager
def _arrow_reading(file: object, what: str, fix: str,
                   arrow_error: type[Exception]) -> Iterator[None]:
    """`flayer.util.errors.reading`, arrow's own errors included."""
    with reading(file, what, fix):
        try:
            yield
        except arrow_error as exc:
            raise ValueError(f"{type(exc).__name__}: {exc}") from None


def read_labels(column: pa.ChunkedArray, num_classes: int, where: str) -> np.ndarray:
    """Integer class labels as int64, each in [0, num_classes)."""
    if column.null_count:
        raise DataError(f"{where}: {column.null_count} samples have no label")
    y = np.asarray(column.to_numpy(), dtype=np.int64)
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        raise DataError(f"{where}: label {int(y[bad][0])} is outside 0..{num_classes - 1}")
    return y
