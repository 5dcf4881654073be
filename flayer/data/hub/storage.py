"""What every kind of storage of a hub dataset shares: the interface the sources read through,
the merge order of splits, and the errors, which name the copy (or the file in it) and say what
to do."""

from __future__ import annotations

import contextlib
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from flayer.util.commands import python_command
from flayer.util.errors import DataError, reading

if TYPE_CHECKING:
    import pyarrow as pa

LOCAL_FORMATS = (
    "a `save_to_disk` folder (DatasetDict or Dataset), a folder (or a single file) of parquet "
    "files with the hub's columns"
)
IMAGE_FOLDER_FORMAT = "an image folder <class>/<image>"


def accepted_formats(images: bool) -> str:
    """The local formats a dataset accepts, for messages (image sets: also an image folder)."""
    return LOCAL_FORMATS + (f", or {IMAGE_FOLDER_FORMAT}" if images else "")


def split_order(names: list[str]) -> list[str]:
    """The merge order of splits: train first, then the others by name."""
    return sorted(names, key=lambda name: (name != "train", name))


def digest(parts: list[str]) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Split:
    """One split of the data; `table` has the source's column names (image, label, text)."""

    name: str
    table: pa.Table


class Storage(ABC):
    """One hub dataset (`hub_id`) in one kind of storage; `formats` names the local copies it
    accepts (for messages)."""

    kind: ClassVar[str]  # part of a local copy's fingerprint: never renamed

    def __init__(self, hub_id: str, formats: str) -> None:
        self.hub_id = hub_id
        self.formats = formats

    @abstractmethod
    def check(self) -> None:
        """Cheap checks, before anything asks for the data's size."""

    @abstractmethod
    def num_rows(self) -> int:
        """Rows of all splits, without decoding any sample."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Identity of the data, for the caches' keys."""

    @abstractmethod
    def splits(self, columns: dict[str, str]) -> list[Split]:
        """All splits in merge order, with the columns named by the keys of `columns` (whose
        values are the hub's names for them)."""

    @property
    @abstractmethod
    def where(self) -> str:
        """The data's place, for messages."""

    @abstractmethod
    def damage_fix(self) -> str:
        """What to do about a damaged file of this copy."""

    def hint(self) -> str:
        """How to give a local copy instead."""
        save = (f'import datasets; datasets.load_dataset("{self.hub_id}")'
                '.save_to_disk("DIR")')
        return (f"give a local copy with dataset.path=: {self.formats}; for example, where the "
                f"hub is reachable: {python_command('-c', save)}")

    def reading(self, file: object, what: str) -> contextlib.AbstractContextManager[None]:
        """Within: a damaged `file` (arrow's own errors included) is named, with what to do."""
        import pyarrow as pa

        return reading(file, what, self.damage_fix(), also=(pa.ArrowException,))

    def require(self, found: list[str], columns: dict[str, str], part: str) -> None:
        """DataError unless `found` has the hub's columns that `columns` names."""
        missing = [c for c in columns.values() if c not in found]
        if missing:
            raise DataError(
                f"{self.where} ({part}) has no column {', '.join(missing)} (it has "
                f"{', '.join(found)}); a local copy of {self.hub_id} needs the hub's columns "
                f"{', '.join(columns.values())}"
            )


class LocalCopy(Storage):
    """A copy at `dataset.path`."""

    def __init__(self, hub_id: str, formats: str, path: Path) -> None:
        super().__init__(hub_id, formats)
        self.path = path

    def check(self) -> None:
        """Nothing beyond finding the copy's format, which `locate` did."""

    @property
    def where(self) -> str:
        return f"dataset.path {self.path}"

    def damage_fix(self) -> str:
        return f"replace the copy with a whole one; {self.hint()}"

    def file_sizes(self, files: list[Path]) -> list[str]:
        """`name:size` of each file, named relative to the copy, for fingerprints."""
        return [f"{f.relative_to(self.path) if f != self.path else f.name}:{f.stat().st_size}"
                for f in files]


def dataset_splits(storage: Storage, data: dict[str, Any], origin: object,
                   columns: dict[str, str]) -> list[Split]:
    """The splits of `datasets` Datasets (the hub's, or a save_to_disk folder's, read from
    `origin`) as arrow tables, in merge order."""
    out = []
    for name in split_order(list(data)):
        ds = data[name]
        storage.require(ds.column_names, columns, f"split {name!r}")
        with storage.reading(origin, f"the split {name!r} of {storage.hub_id}"):
            table = ds.select_columns(list(columns.values())).with_format("arrow")[:]
        out.append(Split(name, table.rename_columns(list(columns))))
    return out


def as_split_dict(loaded: Any) -> dict[str, Any]:
    """A DatasetDict as a plain dict; one Dataset as the split `train`."""
    import datasets

    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded)


def read_column(storage: Storage, column: str) -> np.ndarray:
    """The hub's column `column` of every split, in merge order (nothing else is read): a
    column of client ids. Strings come as Python strings, numbers as numbers."""
    parts = []
    for split in storage.splits({"column": column}):
        values = split.table.column("column")
        if values.null_count:
            raise DataError(f"{storage.where} (split {split.name!r}): {values.null_count} "
                            f"samples have no {column}")
        parts.append(values.to_numpy())
    return np.concatenate(parts) if parts else np.empty(0)


def read_labels(column: pa.ChunkedArray, num_classes: int, where: str) -> np.ndarray:
    """Integer class labels as int64, each in [0, num_classes)."""
    if column.null_count:
        raise DataError(f"{where}: {column.null_count} samples have no label")
    y = np.asarray(column.to_numpy(), dtype=np.int64)
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        raise DataError(f"{where}: label {int(y[bad][0])} is outside 0..{num_classes - 1}")
    return y
