"""What a dataset source provides, and the registry of sources.

A source is bound to one `dataset` config (its path and options). The federated layer asks it
for the pool of samples, partitions the labels (or takes the source's own clients, for sources
that come already split: all of them, or as many as the run asks for, `chosen_clients`), then
lets the source `fit` to the training samples (AG News builds
its vocabulary there) before any model is built from its `spec`.

A pooled source whose samples name their own clients (FEMNIST's writers, the hub Shakespeare's
speaking roles) lists those columns in `client_columns` and reads one with `column`, without
decoding any sample: `partition=natural` makes its clients from them.

Where the dataset fixes the spec without any data (`static_spec`), a server builds the model
without holding data, and a node may bring its own folder (node config `data-dir`).

The built-in sources live in `flayer.data.sources`, one module per dataset; importing that
package fills `DATASETS`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flayer.config.schema import DatasetConfig
from flayer.data.split import ClientSplit
from flayer.util.errors import require
from flayer.util.registry import Registry


@dataclass(frozen=True)
class Pool:
    """All samples of a dataset merged into one pool (PFLlib merges train and test)."""

    x: np.ndarray  # stored compactly (uint8 images as N x C x H x W, token ids as N x T)
    y: np.ndarray  # int64 labels


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its inputs and outputs."""

    input_shape: tuple[int, ...]  # one sample as the model receives it
    num_classes: int
    vocab_size: int | None = None  # token inputs: ids lie in [0, vocab_size)


class DataSource(abc.ABC):
    """Base of every source: subclasses implement the abstract methods and may override the
    hooks (`spec`, `fixed_splits`, `num_clients`, `fit`)."""

    name: str
    partitioned = True  # False: the source brings its own clients (`fixed_splits`)
    # Whether the samples are token ids, where the dataset says so without data (None: only
    # the data tells, as in a PFLlib folder); a shift of images refuses them before any work.
    tokens: bool | None = False
    # Columns whose values name each sample's client (a writer, a speaker), the first the one
    # partition=natural takes by default; none: the samples name no clients.
    client_columns: tuple[str, ...] = ()

    def __init__(self, cfg: DatasetConfig) -> None:
        self.cfg = cfg

    @classmethod
    @abc.abstractmethod
    def static_spec(cls, cfg: DatasetConfig) -> DataSpec | None:
        """The spec where the dataset fixes it without any data (shapes and classes are the
        dataset's; a given vocabulary file), else None: it is learnt from the data. Every
        source says which, since a server without data and a node with its own data rely
        on it."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise DataError naming what is missing and how to get it; cheap."""

    @abc.abstractmethod
    def num_samples(self) -> int:
        """Size of the pool, known without decoding it."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Identity of the data for cache keys (e.g. names and sizes of its files)."""

    @abc.abstractmethod
    def load(self) -> Pool:
        """Read and decode the whole pool."""

    @abc.abstractmethod
    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Compact stored samples -> model input."""

    @property
    def spec(self) -> DataSpec:
        """Input shape, classes (and vocabulary size); final after `fit`. The static spec
        here; sources that learn it from the data override this."""
        spec = self.static_spec(self.cfg)
        if spec is None:
            raise RuntimeError(f"{self.name}: the spec is learnt from the data; it is known "
                               "after `fit`")
        return spec

    def pixel_range(self) -> tuple[float, float] | None:
        """A pixel's stored values at black and at white, for a shift of images (uint8
        images: 0 and 255); None where the samples are token ids. Known once `spec` is."""
        return None if self.spec.vocab_size is not None else (0.0, 255.0)

    def fixed_splits(self) -> list[ClientSplit]:
        """The clients as the data defines them (indices into the pool); only where
        `partitioned` is False."""
        raise NotImplementedError(f"{self.name} is partitioned: it has no clients of its own")

    def num_clients(self) -> int:
        """How many clients `fixed_splits` gives; sources override it where counting is
        cheaper than reading the data."""
        return len(self.fixed_splits())

    def check_clients(self, num_clients: int) -> None:
        """ConfigError unless the data can give a run `num_clients` clients (only where
        `partitioned` is False). By default a run takes all of the data's clients."""
        clients = self.num_clients()
        require(num_clients == clients, "num_clients", num_clients,
                f"must be {clients}: the {self.name} data at dataset.path has {clients} "
                "clients")

    def chosen_clients(self, num_clients: int, seed: int) -> list[int]:
        """Which of `fixed_splits` are the run's clients 0 .. num_clients - 1, in that order
        (only where `partitioned` is False); by default all of them, as they come."""
        return list(range(num_clients))

    def column(self, name: str) -> np.ndarray:
        """The values of the client column `name` (one of `client_columns`), one per sample in
        pool order; read without decoding any sample, so that a split by it is checked (and
        made) before the pool is decoded."""
        raise NotImplementedError(f"{self.name} has no client columns")

    def time_gap(self) -> int:
        """0 where samples are independent: each client's are shuffled and cut (PFLlib's
        split). k > 0 where a client's samples are windows of k characters of one text, each
        one character after the last, in pool order: they are split in time, the k windows
        after the training part left out, so that no character is in both train and test."""
        return 0

    def fit(self, x: np.ndarray, train: np.ndarray, folder: Path) -> None:
        """Learn what inputs need from the pool's training samples `train` (indices into x);
        `folder` is this split's cache folder. Optional: images are used as stored."""
        return None


DATASETS: Registry[type[DataSource]] = Registry("dataset")


def scale_images(x: torch.Tensor) -> torch.Tensor:
    """PFLlib's image normalization: x/255, then (x - 0.5) / 0.5."""
    return (x.float() / 255.0).sub_(0.5).div_(0.5)  # a new tensor: x may be a float one
