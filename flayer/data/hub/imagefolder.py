"""An image folder `<class>/<image>` (image sets only), read as one split `train` with the
columns `image` and `label`: class folders named 0, 1, ... keep their numbers as labels, other
names are numbered in sorted order (as in `datasets`' imagefolder and torchvision's
ImageFolder)."""

from __future__ import annotations

import os
from pathlib import Path

from flayer.data.cache import Memo
from flayer.data.hub.storage import LocalCopy, Split, digest
from flayer.util.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

Listing = tuple[list[str], list[tuple[str, int, int]]]  # class folders; (file, label, size)
# re-listed when a class folder changes (`flayer.data.cache.forget` drops them)
_LISTINGS: Memo[Listing] = Memo("class folders and images of an image folder",
                                key=("folder", "class folders and their modification times"))


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def has_images(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(e.is_file() and _is_image(e.name) for e in entries)


def is_image_folder(path: Path) -> bool:
    return any(has_images(d) for d in class_dirs(path))


def class_labels(names: list[str]) -> dict[str, int]:
    """Image-folder labels: numeric folder names keep their number, others count in sorted
    order."""
    if names and all(n.isdigit() for n in names):
        return {n: int(n) for n in names}
    return {n: i for i, n in enumerate(sorted(names))}


class ImageFolder(LocalCopy):
    kind = "imagefolder"

    def num_rows(self) -> int:
        return len(self._listing()[1])

    def fingerprint(self) -> str:
        return digest([self.kind] + [f"{rel}:{size}" for rel, _, size in self._listing()[1]])

    def splits(self, columns: dict[str, str]) -> list[Split]:
        """The folder as one split, images stored by path like `datasets`' Image()."""
        import pyarrow as pa

        others = [hub for ours, hub in columns.items() if ours not in ("image", "label")]
        if others:
            raise DataError(f"{self.where} is an image folder, which holds images and their "
                            f"classes only, no column {', '.join(others)}; give a save_to_disk "
                            f"folder or parquet files of {self.hub_id}, which keep it")
        files = self._listing()[1]
        image = pa.StructArray.from_arrays(
            [pa.nulls(len(files), pa.binary()),
             pa.array([str(self.path / rel) for rel, _, _ in files], pa.string())],
            names=["bytes", "path"],
        )
        label = pa.array([lab for _, lab, _ in files], pa.int64())
        return [Split("train", pa.table({"image": image, "label": label}))]

    def _listing(self) -> Listing:
        """Class folders and (relative file, label, size) of every image, sorted by class
        folder then file name."""
        dirs = class_dirs(self.path)

        def scan() -> Listing:
            labels = class_labels([d.name for d in dirs])
            files = []
            for d in dirs:
                with os.scandir(d) as entries:
                    found = sorted((e.name, e.stat().st_size) for e in entries
                                   if e.is_file() and _is_image(e.name))
                files += [(f"{d.name}/{name}", labels[d.name], size) for name, size in found]
            return [d.name for d in dirs], files

        key = (str(self.path), tuple((d.name, d.stat().st_mtime_ns) for d in dirs))
        return _LISTINGS.get(key, scan)
