"""Label partitioners: labels -> one index array per client. One file per scheme."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from flayer.config import PartitionConfig
from flayer.registry import Registry

# (labels, num_clients, settings, min_size, seed) -> list of index arrays, one per client
Partitioner = Callable[[np.ndarray, int, PartitionConfig, int, int], list[np.ndarray]]
PARTITIONERS: Registry[Partitioner] = Registry("partitioner")


def load_partitions(partitioner: Any, num_clients: int) -> list[np.ndarray]:
    """The pool indices (column `idx`) of every partition of a flwr-datasets partitioner. Its
    warnings are silenced: where it cannot satisfy the settings we raise our own DataError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64)
            for i in range(num_clients)
        ]


def default_min_size(pool_size: int, num_clients: int) -> int:
    """PFLlib's least samples per client: int(min(40, pool / (2 N)))."""
    return int(min(40, pool_size / (2 * num_clients)))


from flayer.data.partitioners import (  # noqa: E402,F401  (each registers itself)
    dirichlet,
    iid,
    pathological,
)
