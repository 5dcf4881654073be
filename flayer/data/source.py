"""What a dataset source provides, and the registry of sources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from flayer.registry import Registry


@dataclass(frozen=True)
class Pool:
    """All samples of a dataset merged into one pool (PFLlib merges train and test)."""

    x: np.ndarray  # stored compactly (uint8 images as N x C x H x W)
    y: np.ndarray  # int64 labels


class DataSource(Protocol):
    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    default_path: str

    def check(self, path: str) -> None:
        """Raise DataError naming what is missing and how to get it; cheap."""

    def num_samples(self, path: str) -> int:
        """Size of the pool, known without loading it."""

    def fingerprint(self, path: str) -> str:
        """Identity of the data at path for cache keys (names and sizes of its files)."""

    def load(self, path: str) -> Pool:
        """Read the whole pool."""

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Compact stored samples -> model input (normalized float tensor)."""


DATASETS: Registry[DataSource] = Registry("dataset")


def scale_images(x: torch.Tensor) -> torch.Tensor:
    """PFLlib's image normalization: x/255, then (x - 0.5) / 0.5."""
    return x.float().div_(255.0).sub_(0.5).div_(0.5)
