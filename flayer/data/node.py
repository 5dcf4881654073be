"""A SuperNode's own data (node config `data-dir`), for deployments where every host holds
its data separately instead of a partition of one named dataset.

Two layouts are read:
- PFLlib client files: `train.npz` and `test.npz` in the folder (or PFLlib's own layout,
  `train/<partition-id>.npz` and `test/<partition-id>.npz`), each a pickled dict with `x` and
  `y` under the key `data`. Loading a pickle can run code: only point a node at files you trust.
- A dataset folder in the run's dataset format (e.g. the four Fashion-MNIST IDX files): all of
  it is this node's data, split into train and test by the node itself
  (`partition.train_fraction`, seeded by the run seed and the node's partition id).

The node's samples get the run's feature shift (`shift`) as partition `partition-id` would.

The model is built from the dataset's spec, which must be known without any data
(`DataSource.static_spec`: every dataset but AG News without a vocabulary file and PFLlib
folders) so that the server and every node build the same model without sharing samples.
"""

from __future__ import annotations

import os
from dataclasses import astuple, replace
from pathlib import Path

import numpy as np

from flayer.config.schema import Config
from flayer.data.cache import Memo
from flayer.data.federated import ClientData, cache_root, client_data
from flayer.data.shifts import shift_key
from flayer.data.source import DataSource, DataSpec
from flayer.data.sources import DATASETS
from flayer.data.sources.pfllib import read_client_file
from flayer.data.split import ClientSplit, train_test_split
from flayer.data.subset import refuse_fraction
from flayer.util.errors import DataError
from flayer.util.seeding import rng_for

NODE_DATA = "a node's own data (node config data-dir), which it uses whole"


def static_spec(cfg: Config) -> DataSpec | None:
    """The run's input/output spec where the dataset fixes it without data; None where it is
    learnt from the data (a vocabulary built from the training texts, a PFLlib folder)."""
    return DATASETS.get(cfg.dataset.name).static_spec(cfg.dataset)


def node_source(cfg: Config, data_dir: str) -> DataSource:
    """The run's dataset source, pointed at the node's folder."""
    if static_spec(cfg) is None:
        raise DataError(
            f"node data (data-dir) needs a dataset whose model spec is known without data; "
            f"{cfg.dataset.name} with these settings learns it from the data, so use "
            f"partition-id/num-partitions (or, for a text set, give every node the same "
            f"dataset.vocab file)"
        )
    return DATASETS.get(cfg.dataset.name)(replace(cfg.dataset, path=data_dir))


def _pfllib_files(folder: Path, partition_id: int) -> tuple[Path, Path] | None:
    for train, test in ((folder / "train.npz", folder / "test.npz"),
                        (folder / "train" / f"{partition_id}.npz",
                         folder / "test" / f"{partition_id}.npz")):
        if train.is_file() and test.is_file():
            return train, test
    return None


def _compact(x: np.ndarray, spec: DataSpec, file: Path) -> np.ndarray:
    """PFLlib stores images normalized to [-1, 1] as float32: back to the uint8 the rest of
    flayer stores (exact for 8-bit sources)."""
    if x.ndim == len(spec.input_shape):  # no channel axis
        x = x[:, None]
    if tuple(x.shape[1:]) != tuple(spec.input_shape):
        raise DataError(f"{file}: samples of shape {x.shape[1:]}, the model expects "
                        f"{spec.input_shape}")
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (x.min() < -1.0001 or x.max() > 1.0001):
            raise DataError(f"{file}: float images must be PFLlib-normalized to [-1, 1]")
        return np.rint((x.astype(np.float64) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    return x.astype(np.uint8)


def _check_labels(y: np.ndarray, spec: DataSpec, where: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= spec.num_classes):
        raise DataError(f"{where}: labels must lie in [0, {spec.num_classes})")


def _load(cfg: Config, data_dir: str, partition_id: int, val_fraction: float) -> ClientData:
    folder = Path(os.path.expanduser(data_dir))
    if not folder.is_dir():
        raise DataError(f"node data folder {folder} (node config data-dir) does not exist")
    source = node_source(cfg, str(folder))
    spec = source.spec
    files = _pfllib_files(folder, partition_id)
    if files is not None:
        if spec.vocab_size is not None:  # PFLlib's token ids are not those of dataset.vocab
            raise DataError(f"{folder}: PFLlib client files of token ids cannot be read as "
                            f"{cfg.dataset.name} node data; give the node's samples in the "
                            f"dataset's own format")
        (x_tr, y_tr), (x_te, y_te) = (read_client_file(f) for f in files)
        x_tr, x_te = _compact(x_tr, spec, files[0]), _compact(x_te, spec, files[1])
        x = np.concatenate([x_tr, x_te])
        y = np.concatenate([y_tr, y_te])
        train, test = np.arange(len(y_tr)), np.arange(len(y_tr), len(y))
    else:
        source.check()
        pool = source.load()
        x, y = pool.x, pool.y
        split = train_test_split(np.arange(len(y)), cfg.partition.train_fraction,
                                 rng_for(cfg.seed, "node-split", partition_id))
        train, test = split.train, split.test
        # inputs may need what only the data says (AG News: pool ids -> vocabulary ids)
        source.fit(x, train, cache_root(cfg) / "nodes" / f"{source.name}-{source.fingerprint()}")
    _check_labels(y, spec, str(folder))
    return client_data(cfg, source, partition_id, ClientSplit(train=train, test=test), x, y,
                       val_fraction)


_NODES: Memo[ClientData] = Memo("a node's own data as one client's",
                                key=("dataset settings at the node's folder", "seed",
                                     "train fraction", "shift settings", "num_clients",
                                     "partition id", "validation fraction"))


def load_node_data(cfg: Config, data_dir: str, partition_id: int,
                   val_fraction: float = 0.0) -> ClientData:
    """The node's own samples as one client's data (loaded once per process)."""
    refuse_fraction(cfg.dataset.fraction, NODE_DATA)
    key = (astuple(replace(cfg.dataset, path=data_dir)), cfg.seed,
           cfg.partition.train_fraction, shift_key(cfg.shift), cfg.num_clients, partition_id,
           val_fraction)
    return _NODES.get(key, lambda: _load(cfg, data_dir, partition_id, val_fraction))
