"""Image sets from the Hugging Face hub: CIFAR-10, CIFAR-100, Tiny-ImageNet and FEMNIST.

Each is read through a `Storage` (the hub, or a local copy: see flayer.data.hub), decoded once
to uint8 N x C x H x W in the set's mode (colour sets: every image converted to RGB, C = 3, as
Tiny-ImageNet has greyscale ones; FEMNIST: greyscale, C = 1) and normalized per batch like
PFLlib (`scale_images`).

FEMNIST (LEAF's federated EMNIST, Caldas et al., "LEAF: A Benchmark for Federated Settings";
hub flwrlabs/femnist, one split `train`: 814,277 handwritten characters, 28x28 greyscale, 62
classes `character`: digits, then upper-case, then lower-case letters) names each sample's
writer (`writer_id`) and the NIST collection the writer belongs to (`hsf_id`, 0-7):
partition=natural makes the writers the clients. An image folder holds neither (it is still
read, for the label schemes).
"""

from __future__ import annotations

import functools
import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import torch

from flayer.config.schema import DatasetConfig
from flayer.data.hub import Storage, locate, read_column, read_labels
from flayer.data.source import DATASETS, DataSource, DataSpec, Pool, scale_images
from flayer.util.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa
    from PIL.Image import Image


def _open(data: bytes | None, path: str | None, where: str) -> Image:
    """A stored image (bytes, else a file path, as `datasets`' Image() stores it) as PIL."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    if data is None and not path:
        raise DataError(f"the image {where} is empty (neither bytes nor a path)")
    try:
        img = PILImage.open(io.BytesIO(data) if data is not None else path)
        img.load()  # decode here, so that a broken file is named
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError) as exc:
        # PIL reports a broken file by any of these (a truncated PNG: SyntaxError or OSError)
        raise DataError(f"cannot decode the image {where} ({type(exc).__name__}: {exc}); "
                        "replace it with a whole copy or remove it") from None
    return img


DECODE_BLOCK = 256  # images per decoding task
DECODE_THREADS = min(8, os.cpu_count() or 1)  # PIL decodes without holding the GIL


def _cells(chunk: pa.Array) -> list[tuple[bytes | None, str | None]]:
    """(bytes, path) of each image of one chunk; accepts Image() structs, raw bytes or
    paths."""
    import pyarrow as pa

    n = len(chunk)
    if pa.types.is_struct(chunk.type):
        names = {chunk.type.field(i).name for i in range(chunk.type.num_fields)}
        data = chunk.field("bytes").to_pylist() if "bytes" in names else [None] * n
        paths = chunk.field("path").to_pylist() if "path" in names else [None] * n
        return list(zip(data, paths, strict=True))
    if pa.types.is_binary(chunk.type) or pa.types.is_large_binary(chunk.type):
        return [(b, None) for b in chunk.to_pylist()]
    if pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type):
        return [(None, p) for p in chunk.to_pylist()]
    raise DataError(f"an image column of type {chunk.type} holds no images")


CHANNELS = {"RGB": 3, "L": 1}  # the modes images are decoded to: colour, greyscale


def _decode_into(out: np.ndarray, first: int, cells: list[tuple[bytes | None, str | None]],
                 where: str, mode: str) -> None:
    """Decode cells into out[first:first + len(cells)], checking each image's size."""
    h, w = out.shape[2:]
    for i, (data, path) in enumerate(cells, start=first):
        name = f"{path} ({where}, row {i})" if path else f"{where}, row {i}"
        with _open(data, path, name) as img:
            if img.size != (w, h):
                raise DataError(f"the image {name} is {img.size[0]}x{img.size[1]} pixels; this "
                                f"dataset's images are {w}x{h}")
            pixels = np.asarray(img if img.mode == mode else img.convert(mode), dtype=np.uint8)
            out[i] = pixels.reshape(h, w, -1).transpose(2, 0, 1)


def decode_images(column: pa.ChunkedArray, size: tuple[int, int], where: str,
                  mode: str = "RGB") -> np.ndarray:
    """Decode stored images to uint8 N x C x H x W in `mode` (RGB: C = 3, L: greyscale, C = 1;
    any image converted to it); each must be H x W (size), else DataError naming the file (or
    row) and its size. One arrow chunk at a time (its encoded images in memory), its blocks
    decoded on a few threads."""
    out = np.empty((len(column), CHANNELS[mode], *size), dtype=np.uint8)
    first = 0
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for chunk in column.chunks:
            cells = _cells(chunk)
            tasks = [pool.submit(_decode_into, out, first + s, cells[s : s + DECODE_BLOCK], where,
                                 mode)
                     for s in range(0, len(cells), DECODE_BLOCK)]
            for task in tasks:
                task.result()
            first += len(cells)
    return out


class HubImages(DataSource):
    """An image classification set of the hub; subclasses name its id, columns and size."""

    hub_id: str
    columns: dict[str, str]  # our name (image, label) -> the hub's column
    num_classes: int
    size: tuple[int, int]  # H, W
    mode = "RGB"  # what every image is converted to: RGB, or L (greyscale)

    @functools.cached_property
    def data(self) -> Storage:
        """Where the data is: found on first use, so that a bad dataset.path is reported by
        `check`."""
        return locate(self.hub_id, self.cfg.path, images=True)

    @classmethod
    def static_spec(cls, cfg: DatasetConfig) -> DataSpec:
        """Fixed by the dataset: images of its mode and size, its classes."""
        return DataSpec(input_shape=(CHANNELS[cls.mode], *cls.size),
                        num_classes=cls.num_classes)

    def check(self) -> None:
        self.data.check()

    def num_samples(self) -> int:
        return self.data.num_rows()

    def fingerprint(self) -> str:
        return self.data.fingerprint()

    def load(self) -> Pool:
        xs, ys = [], []
        for split in self.data.splits(self.columns):
            where = f"{self.name} split {split.name!r}"
            xs.append(decode_images(split.table.column("image"), self.size, where, self.mode))
            ys.append(read_labels(split.table.column("label"), self.num_classes, where))
        if not xs:
            raise DataError(f"{self.name}: no samples in {self.data.hub_id}")
        return Pool(x=np.concatenate(xs), y=np.concatenate(ys))

    def column(self, name: str) -> np.ndarray:
        return read_column(self.data, name)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return scale_images(x)


class CIFAR10(HubImages):
    name = "cifar10"
    hub_id = "uoft-cs/cifar10"
    columns = {"image": "img", "label": "label"}
    num_classes = 10
    size = (32, 32)


class CIFAR100(HubImages):
    name = "cifar100"
    hub_id = "uoft-cs/cifar100"
    columns = {"image": "img", "label": "fine_label"}  # the 100 fine classes
    num_classes = 100
    size = (32, 32)


class TinyImageNet(HubImages):
    name = "tiny_imagenet"
    hub_id = "zh-plus/tiny-imagenet"
    columns = {"image": "image", "label": "label"}
    num_classes = 200
    size = (64, 64)


class FEMNIST(HubImages):
    name = "femnist"
    hub_id = "flwrlabs/femnist"
    columns = {"image": "image", "label": "character"}
    num_classes = 62
    size = (28, 28)
    mode = "L"
    client_columns = ("writer_id", "hsf_id")  # the writers (LEAF's clients); NIST's collections


DATASETS.register("cifar10")(CIFAR10)
DATASETS.register("cifar100")(CIFAR100)
DATASETS.register("tiny_imagenet")(TinyImageNet)
DATASETS.register("femnist")(FEMNIST)
