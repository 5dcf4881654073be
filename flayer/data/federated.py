"""The federated view of a dataset: cached pool, cached client splits, per-client tensors."""

from __future__ import annotations

import logging
import os
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np
import torch

from flayer.config.schema import Config
from flayer.data.cache import Memo, cache_key, save_array_atomic, save_arrays_atomic
from flayer.data.partitioners import PARTITIONERS
from flayer.data.shifts import shift_key, shift_samples
from flayer.data.source import DataSource
from flayer.data.sources import DATASETS
from flayer.data.split import ClientSplit, client_split, holdout, least_for_time_split
from flayer.data.subset import pool_subset, subset_size
from flayer.util.errors import READ_ERRORS
from flayer.util.seeding import rng_for

log = logging.getLogger(__name__)


def source_of(cfg: Config) -> DataSource:
    """The run's data source, bound to its dataset settings (not yet fitted)."""
    return DATASETS.get(cfg.dataset.name)(cfg.dataset)


def pool_size(cfg: Config) -> int:
    """Samples the clients are cut from: the pool, or its share (`dataset.fraction`)."""
    return subset_size(source_of(cfg).num_samples(), cfg.dataset.fraction)


def min_partition_size(cfg: Config) -> int:
    """The smallest client a split may give: the scheme's least size, raised where the data is
    split in time to what leaves a client a test window."""
    least = cfg.partition.least_size(pool_size(cfg), cfg.num_clients)
    gap = source_of(cfg).time_gap()
    return least if gap == 0 else max(least, least_for_time_split(cfg.partition.train_fraction,
                                                                   gap))


def cache_root(cfg: Config) -> Path:
    """The run's on-disk cache (cache_dir), shared by every process."""
    return Path(os.path.expanduser(cfg.cache_dir))


def pool_files(cfg: Config) -> tuple[Path, Path]:
    """Decoded pool as two .npy files (memory-mapped by every process that reads them)."""
    source = source_of(cfg)
    folder = cache_root(cfg) / "pools" / f"{source.name}-{source.fingerprint()}"
    x_file, y_file = folder / "x.npy", folder / "y.npy"
    if not _whole_pool(x_file, y_file):
        pool = source.load()
        save_array_atomic(x_file, pool.x)
        save_array_atomic(y_file, pool.y)
    return x_file, y_file


def _whole_pool(x_file: Path, y_file: Path) -> bool:
    """Whether the cached pool is there and whole (a cut or emptied cache file is made again
    from the data, saying so: it holds nothing the data does not)."""
    if not (x_file.exists() and y_file.exists()):
        return False
    try:
        whole = len(np.load(x_file, mmap_mode="r")) == len(np.load(y_file, mmap_mode="r"))
    except READ_ERRORS:
        whole = False
    if not whole:
        log.warning("the cached pool in %s is damaged; decoding the data again", x_file.parent)
    return whole


# the few files a process reads (a pool's x and y), each mapped once
_MAPPED: Memo[np.ndarray] = Memo("memory-mapped .npy file", key=("file",), keep=4)


def _memmap(file: str) -> np.ndarray:
    return _MAPPED.get((file,), lambda: np.load(file, mmap_mode="r"))


_SPLITS_FILES: Memo[Path] = Memo("the splits file of a setting",
                                 key=("dataset settings", "partition settings", "num_clients",
                                      "seed", "cache_dir"))


def splits_file(cfg: Config) -> Path:
    """Where the run's client splits are cached: named by everything that shapes them (asked
    once per client served, so its answer is kept per process)."""
    key = (astuple(cfg.dataset), (type(cfg.partition).__name__, astuple(cfg.partition)),
           cfg.num_clients, cfg.seed, cfg.cache_dir)
    return _SPLITS_FILES.get(key, lambda: _splits_file(cfg))


def _splits_file(cfg: Config) -> Path:
    source = source_of(cfg)
    settings: dict = {"dataset": source.name, "data": source.fingerprint(),
                      "num_clients": cfg.num_clients, "seed": cfg.seed}
    name = "given"
    if source.partitioned:
        settings.update(partition=vars(cfg.partition), min_size=min_partition_size(cfg))
        if cfg.dataset.fraction < 1:  # only then: the whole pool's files keep their names
            settings.update(fraction=cfg.dataset.fraction)
        name = cfg.partition.name
    return cache_root(cfg) / "splits" / f"{source.name}-{name}-{cache_key(settings)}.npz"


def client_splits(cfg: Config) -> list[ClientSplit]:
    """Every client's train/test indices; computed once per setting, then read from disk."""
    file = splits_file(cfg)
    if file.exists():
        try:
            return _read_splits(str(file), cfg.num_clients)
        except READ_ERRORS:  # seeded: made again, they are the same splits
            log.warning("the cached client splits %s are damaged; making them again", file)
    return _make_splits(file, cfg)


def _make_splits(file: Path, cfg: Config) -> list[ClientSplit]:
    source = source_of(cfg)
    if not source.partitioned:
        given = source.fixed_splits()
        splits = [given[k] for k in source.chosen_clients(cfg.num_clients, cfg.seed)]
    else:
        gap = source.time_gap()
        splits = [
            client_split(idx, cfg.partition.train_fraction, rng_for(cfg.seed, "split", k), gap)
            for k, idx in enumerate(_partition(cfg, source))
        ]
    arrays: dict[str, np.ndarray] = {}
    for k, split in enumerate(splits):
        arrays[f"train_{k}"], arrays[f"test_{k}"] = split.train, split.test
    save_arrays_atomic(file, arrays)
    return _read_splits(str(file), len(splits))


def _partition(cfg: Config, source: DataSource) -> list[np.ndarray]:
    """Every client's pool indices, as the scheme splits the labels, or the client column it
    names (read without decoding the pool: a refusal comes before that work)."""
    column = cfg.partition.split_column(source.name, source.client_columns)
    if column is None:
        _, y_file = pool_files(cfg)
        values = np.asarray(_memmap(str(y_file)))
    else:
        values = source.column(column)
    subset = pool_subset(len(values), cfg.dataset.fraction, cfg.seed)
    parts = PARTITIONERS.get(cfg.partition.name).split(
        values if subset is None else values[subset], cfg.num_clients, cfg.partition,
        min_partition_size(cfg), cfg.seed
    )
    if subset is not None:  # positions in the subset -> indices into the pool
        parts = [subset[idx] for idx in parts]
    return parts


_SPLITS: Memo[list[ClientSplit]] = Memo("client splits read from a splits file",
                                        key=("splits file", "num_clients"), keep=4)


def _read_splits(file: str, num_clients: int) -> list[ClientSplit]:
    def read() -> list[ClientSplit]:
        with np.load(file) as data:
            return [
                ClientSplit(train=data[f"train_{k}"], test=data[f"test_{k}"])
                for k in range(num_clients)
            ]

    return _SPLITS.get((file, num_clients), read)


def client_sizes(cfg: Config) -> np.ndarray:
    """Every client's (train, test) sample counts, from its split (validation share included
    in train)."""
    return np.array([(len(s.train), len(s.test)) for s in client_splits(cfg)], dtype=np.int64)


# A fitted source is shaped by its split (the splits file's name holds the data, partition,
# seed) and by the dataset settings, which the split does not hold all of (dataset.vocab).
_FITTED: Memo[DataSource] = Memo("source fitted to its split's training samples",
                                 key=("splits file", "dataset settings"))


def dataset(cfg: Config) -> DataSource:
    """The run's source after the split, fitted to the training samples of all clients (its
    `spec` is then final); one per process and setting."""
    file = splits_file(cfg)

    def fitted() -> DataSource:
        source = source_of(cfg)
        splits = client_splits(cfg)
        x_file, _ = pool_files(cfg)
        train = np.sort(np.concatenate([s.train for s in splits]))
        source.fit(_memmap(str(x_file)), train, file.with_suffix(""))
        return source

    return _FITTED.get((str(file), astuple(cfg.dataset)), fitted)


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


def client_data(cfg: Config, source: DataSource, client: int, split: ClientSplit,
                x: np.ndarray, y: np.ndarray, val_fraction: float) -> ClientData:
    """A client's tensors from its split (indices into x and y): its train and test samples as
    the run's shift makes them (`shift`), then its validation share held out of train by
    position, so that a sample's shift does not depend on how much a method holds out."""
    train = shift_samples(cfg, source, client, "train", _take(x, split.train))
    test = shift_samples(cfg, source, client, "test", _take(x, split.test))
    kept, held = holdout(np.arange(len(split.train)), val_fraction,
                         rng_for(cfg.seed, "holdout", client))
    return ClientData(
        x_train=train[torch.from_numpy(kept)],
        y_train=_take(y, split.train[kept]),
        x_test=test,
        y_test=_take(y, split.test),
        x_val=train[torch.from_numpy(held)],
        y_val=_take(y, split.train[held]),
        source=source,
    )


_CLIENTS: Memo[ClientData] = Memo("a client's tensors (and its fitted source)",
                                  key=("splits file", "dataset settings", "shift settings",
                                       "partition id", "validation fraction"))


def load_client(cfg: Config, partition_id: int, val_fraction: float = 0.0) -> ClientData:
    """A client's tensors, loaded once per process and kept for later rounds."""

    def load() -> ClientData:
        source = dataset(cfg)
        x_file, y_file = pool_files(cfg)
        split = client_splits(cfg)[partition_id]
        return client_data(cfg, source, partition_id, split, _memmap(str(x_file)),
                           _memmap(str(y_file)), val_fraction)

    key = (str(splits_file(cfg)), astuple(cfg.dataset), shift_key(cfg.shift), partition_id,
           val_fraction)
    return _CLIENTS.get(key, load)
