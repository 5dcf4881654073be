"""The federated view of a dataset: cached pool, cached client splits, per-client tensors."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import flayer.data.agnews  # noqa: F401  (registers the built-in sources)
import flayer.data.fmnist  # noqa: F401
import flayer.data.images  # noqa: F401
import flayer.data.pfllib  # noqa: F401
from flayer.config import Config
from flayer.data.cache import cache_key, save_array_atomic, save_arrays_atomic
from flayer.data.partitioners import PARTITIONERS, default_min_size
from flayer.data.source import DATASETS, DataSource
from flayer.data.split import ClientSplit, holdout, train_test_split
from flayer.seeding import rng_for


def source_of(cfg: Config) -> DataSource:
    """The run's data source, bound to its dataset settings (not yet fitted)."""
    return DATASETS.get(cfg.dataset.name)(cfg.dataset)


def min_partition_size(cfg: Config) -> int:
    if cfg.partition.min_partition_size is not None:
        return cfg.partition.min_partition_size
    return default_min_size(source_of(cfg).num_samples(), cfg.num_clients)


def _cache_root(cfg: Config) -> Path:
    return Path(os.path.expanduser(cfg.cache_dir))


def pool_files(cfg: Config) -> tuple[Path, Path]:
    """Decoded pool as two .npy files (memory-mapped by every process that reads them)."""
    source = source_of(cfg)
    folder = _cache_root(cfg) / "pools" / f"{source.name}-{source.fingerprint()}"
    x_file, y_file = folder / "x.npy", folder / "y.npy"
    if not (x_file.exists() and y_file.exists()):
        pool = source.load()
        save_array_atomic(x_file, pool.x)
        save_array_atomic(y_file, pool.y)
    return x_file, y_file


@functools.lru_cache(maxsize=4)
def _memmap(file: str) -> np.ndarray:
    return np.load(file, mmap_mode="r")


def splits_file(cfg: Config) -> Path:
    source = source_of(cfg)
    settings: dict = {"dataset": source.name, "data": source.fingerprint(),
                      "num_clients": cfg.num_clients, "seed": cfg.seed}
    name = "given"
    if source.partitioned:
        settings.update(partition=vars(cfg.partition), min_size=min_partition_size(cfg))
        name = cfg.partition.name
    return _cache_root(cfg) / "splits" / f"{source.name}-{name}-{cache_key(settings)}.npz"


def client_splits(cfg: Config) -> list[ClientSplit]:
    """Every client's train/test indices; computed once per setting, then read from disk."""
    file = splits_file(cfg)
    return _read_splits(str(file), cfg.num_clients) if file.exists() else _make_splits(file, cfg)


def _make_splits(file: Path, cfg: Config) -> list[ClientSplit]:
    source = source_of(cfg)
    if not source.partitioned:
        splits = source.fixed_splits()
    else:
        _, y_file = pool_files(cfg)
        labels = np.asarray(_memmap(str(y_file)))
        parts = PARTITIONERS.get(cfg.partition.name)(
            labels, cfg.num_clients, cfg.partition, min_partition_size(cfg), cfg.seed
        )
        splits = [
            train_test_split(idx, cfg.partition.train_fraction, rng_for(cfg.seed, "split", k))
            for k, idx in enumerate(parts)
        ]
    arrays: dict[str, np.ndarray] = {}
    for k, split in enumerate(splits):
        arrays[f"train_{k}"], arrays[f"test_{k}"] = split.train, split.test
    save_arrays_atomic(file, arrays)
    return _read_splits(str(file), len(splits))


@functools.lru_cache(maxsize=4)
def _read_splits(file: str, num_clients: int) -> list[ClientSplit]:
    with np.load(file) as data:
        return [
            ClientSplit(train=data[f"train_{k}"], test=data[f"test_{k}"])
            for k in range(num_clients)
        ]


_FITTED: dict[str, DataSource] = {}


def dataset(cfg: Config) -> DataSource:
    """The run's source after the split, fitted to the training samples of all clients (its
    `spec` is then final); one per process and setting."""
    file = splits_file(cfg)
    key = str(file)
    if key not in _FITTED:
        source = source_of(cfg)
        splits = client_splits(cfg)
        x_file, _ = pool_files(cfg)
        train = np.sort(np.concatenate([s.train for s in splits]))
        source.fit(_memmap(str(x_file)), train, file.with_suffix(""))
        _FITTED[key] = source
    return _FITTED[key]


@dataclass
class ClientData:
    """One client's samples in their compact stored form; `to_input` makes model inputs."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    source: DataSource

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def num_classes(self) -> int:
        return self.source.spec.num_classes

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.source.to_input(x)


def _take(data: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(data[idx]))


_CLIENTS: dict[tuple[str, int, float], ClientData] = {}


def load_client(cfg: Config, partition_id: int, val_fraction: float = 0.0) -> ClientData:
    """A client's tensors, loaded once per process and kept for later rounds."""
    key = (str(splits_file(cfg)), partition_id, val_fraction)
    if key not in _CLIENTS:
        source = dataset(cfg)
        x_file, y_file = pool_files(cfg)
        x, y = _memmap(str(x_file)), _memmap(str(y_file))
        split = client_splits(cfg)[partition_id]
        train, val = holdout(split.train, val_fraction, rng_for(cfg.seed, "holdout", partition_id))
        _CLIENTS[key] = ClientData(
            x_train=_take(x, train),
            y_train=_take(y, train),
            x_test=_take(x, split.test),
            y_test=_take(y, split.test),
            x_val=_take(x, val),
            y_val=_take(y, val),
            source=source,
        )
    return _CLIENTS[key]
