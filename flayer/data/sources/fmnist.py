"""Fashion-MNIST from its IDX files, gzipped (as Debian ships them) or not."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from flayer.config import DatasetConfig
from flayer.data.source import DATASETS, DataSource, DataSpec, Pool, scale_images
from flayer.errors import DataError

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
INSTALL_HINT = (
    "install it with `apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu), or run "
    "`python -m flayer.data.fetch_fmnist` where the Hugging Face hub is reachable (it writes "
    "to ~/.cache/flayer/fashion-mnist, which is found without settings), or point "
    "dataset.path at a folder with the four IDX files"
)


def _find(path: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (path / name).is_file():
            return path / name
    return None


def _idx_dims(file: Path) -> tuple[int, ...]:
    opener = gzip.open if file.suffix == ".gz" else open
    with opener(file, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:3] != b"\x00\x00\x08":
            raise DataError(f"{file} is not an IDX file of unsigned bytes")
        dims = f.read(4 * head[3])
    return tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(head[3]))


def read_idx(file: Path) -> np.ndarray:
    """Read one IDX file (the MNIST format: magic, dims, big-endian sizes, uint8 data)."""
    opener = gzip.open if file.suffix == ".gz" else open
    with opener(file, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{file} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{file} holds {data.size} bytes, its header says {dims}")
    return data.reshape(dims)


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
            raise DataError(f"Fashion-MNIST folder {root} does not exist; {INSTALL_HINT}")
        found = {key: _find(root, stem) for key, stem in FILES.items()}
        missing = [FILES[k] for k, v in found.items() if v is None]
        if missing:
            raise DataError(
                f"Fashion-MNIST folder {root} lacks {', '.join(missing)} (.gz or plain); "
                f"{INSTALL_HINT}"
            )
        return {k: v for k, v in found.items() if v is not None}

    @classmethod
    def static_spec(cls, cfg: DatasetConfig) -> DataSpec:
        return cls.spec

    def check(self) -> None:
        self._files()

    def num_samples(self) -> int:
        """Pool size from the label files' headers (no need to read the images)."""
        files = self._files()
        return sum(_idx_dims(files[k])[0] for k in ("train_y", "test_y"))

    def fingerprint(self) -> str:
        files = self._files()
        text = "|".join(f"{f.name}:{f.stat().st_size}" for _, f in sorted(files.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def load(self) -> Pool:
        files = self._files()
        x = np.concatenate([read_idx(files["train_x"]), read_idx(files["test_x"])])
        y = np.concatenate([read_idx(files["train_y"]), read_idx(files["test_y"])])
        if len(x) != len(y):
            raise DataError(f"{len(x)} images but {len(y)} labels in {self.path}")
        return Pool(x=x[:, None, :, :], y=y.astype(np.int64))

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return scale_images(x)


DATASETS.register("fmnist")(FashionMNIST)
