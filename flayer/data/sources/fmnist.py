"""Fashion-MNIST from its IDX files, gzipped (as Debian ships them) or not."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from flayer.config.schema import DatasetConfig
from flayer.data.source import DATASETS, DataSource, DataSpec, Pool, scale_images
from flayer.util.commands import module_command
from flayer.util.errors import DamagedFile, DataError, reading

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
FETCH = "flayer.data.fetch_fmnist"


def install_hint() -> str:
    """How to get the data (commands for the interpreter that runs)."""
    return ("install it with `apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu), or "
            f"run `{module_command(FETCH)}` where the Hugging Face hub is reachable (it writes "
            "to ~/.cache/flayer/fashion-mnist, which is found without settings), or point "
            "dataset.path at a folder with the four IDX files")


def _find(path: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (path / name).is_file():
            return path / name
    return None


def repair() -> str:
    """What to do about a damaged IDX file."""
    return ("replace it with a whole copy (apt-get install --reinstall dataset-fashion-mnist, "
            f"or {module_command(FETCH, 'DIR')}), or point dataset.path at a folder with the "
            "four IDX files")


# the dataset's own shapes: each image file holds N x 28 x 28 bytes, each label file N labels
SHAPES = {"train_x": 3, "test_x": 3, "train_y": 1, "test_y": 1}
CLASSES = 10


def _idx_dims(file: Path) -> tuple[int, ...]:
    with reading(file, "an IDX file", repair()):
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:3] != b"\x00\x00\x08":
                raise DamagedFile(file, "is not an IDX file of unsigned bytes", repair())
            dims = f.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        raise DamagedFile(file, "ends inside its IDX header", repair())
    return tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(head[3]))


def read_idx(file: Path) -> np.ndarray:
    """Read one IDX file (the MNIST format: magic, dims, big-endian sizes, uint8 data)."""
    with reading(file, "an IDX file", repair()):
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rb") as f:
            raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DamagedFile(file, "is not an IDX file of unsigned bytes", repair())
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DamagedFile(file, "ends inside its IDX header", repair())
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DamagedFile(file, f"holds {data.size} bytes of data, its header says {dims} "
                          f"({int(np.prod(dims))})", repair())
    return data.reshape(dims)


def _check_shape(key: str, file: Path, dims: tuple[int, ...]) -> None:
    """Image files hold N x 28 x 28, label files N labels: anything else is another file."""
    want = (28, 28) if SHAPES[key] == 3 else ()
    if len(dims) != SHAPES[key] or tuple(dims[1:]) != want:
        shape = "N x 28 x 28 images" if want else "N labels"
        raise DamagedFile(file, f"holds an array of shape {dims}, Fashion-MNIST's {FILES[key]} "
                          f"holds {shape}", repair())


class FashionMNIST(DataSource):
    name = "fmnist"
    spec = DataSpec(input_shape=(1, 28, 28), num_classes=10)  # the dataset's, fixed
    # Debian's dataset-fashion-mnist package, then where `fetch_fmnist` writes by default
    locations = ("/usr/share/datasets/fashion-mnist", "~/.cache/flayer/fashion-mnist")

    @property
    def path(self) -> str:
        if self.cfg.path:
            return os.path.expanduser(self.cfg.path)
        for place in self.locations:
            if Path(os.path.expanduser(place)).is_dir():
                return place
        return self.locations[0]

    def _files(self) -> dict[str, Path]:
        root = Path(os.path.expanduser(self.path))
        if not root.is_dir():
            raise DataError(f"Fashion-MNIST folder {root} does not exist; {install_hint()}")
        found = {key: _find(root, stem) for key, stem in FILES.items()}
        missing = [FILES[k] for k, v in found.items() if v is None]
        if missing:
            raise DataError(
                f"Fashion-MNIST folder {root} lacks {', '.join(missing)} (.gz or plain); "
                f"{install_hint()}"
            )
        return {k: v for k, v in found.items() if v is not None}

    @classmethod
    def static_spec(cls, cfg: DatasetConfig) -> DataSpec:
        return cls.spec

    def check(self) -> None:
        """The four files' headers: each of its kind's shape, images and labels as many."""
        files = self._files()
        dims = {key: _idx_dims(file) for key, file in files.items()}
        for key, file in files.items():
            _check_shape(key, file, dims[key])
        for part in ("train", "test"):
            images, labels = dims[f"{part}_x"][0], dims[f"{part}_y"][0]
            if images != labels:
                raise DamagedFile(files[f"{part}_y"], f"holds {labels} labels for the {images} "
                                  f"images of {files[f'{part}_x'].name}", repair())

    def num_samples(self) -> int:
        """Pool size from the label files' headers (no need to read the images)."""
        files = self._files()
        return sum(_idx_dims(files[k])[0] for k in ("train_y", "test_y"))

    def fingerprint(self) -> str:
        files = self._files()
        text = "|".join(f"{f.name}:{f.stat().st_size}" for _, f in sorted(files.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def load(self) -> Pool:
        self.check()
        files = self._files()
        arrays = {key: read_idx(file) for key, file in files.items()}
        for key, file in files.items():
            _check_shape(key, file, arrays[key].shape)
        for key in ("train_y", "test_y"):
            if arrays[key].size and int(arrays[key].max()) >= CLASSES:
                raise DamagedFile(files[key], f"holds label {int(arrays[key].max())}; "
                                  f"Fashion-MNIST's labels are 0..{CLASSES - 1}", repair())
        x = np.concatenate([arrays["train_x"], arrays["test_x"]])
        y = np.concatenate([arrays["train_y"], arrays["test_y"]])
        if len(x) != len(y):
            raise DataError(f"{len(x)} images but {len(y)} labels in {self.path}")
        return Pool(x=x[:, None, :, :], y=y.astype(np.int64))

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return scale_images(x)


DATASETS.register("fmnist")(FashionMNIST)
