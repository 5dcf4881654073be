"""Partitioners: one value per sample (its label, or its client id) -> one index array per
client.

One module per scheme holds its split function and its settings class (a PartitionConfig
subclass with its own `check_settings` and, where the data matters, `check`), registered
together by the scheme's name. Every module in this package is imported, so a new scheme is
its module, its conf/partition/<name>.yaml (whose defaults name `/partition_<name>_schema`) and
its test, with no import line elsewhere. A module imports its data libraries inside its split
function: the settings are read and checked without them (and without torch).

What a split function receives first is the labels, for every scheme that splits by label.
A scheme that splits by the data's own clients (natural) says so in its settings'
`split_column`, which names one of the source's `client_columns` (or refuses the dataset);
its split function then receives that column's values instead (`DataSource.column`, read
without decoding the pool). Nothing else changes: the rest of the signature, the least size,
the seed, the per-client train/test split that follows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from omegaconf import MISSING

from flayer.config.schema import PartitionConfig
from flayer.util.registry import Registry, import_modules

S = TypeVar("S", bound=PartitionConfig)

# (labels, or the values of the settings' `split_column`; num_clients; the scheme's settings;
# least client size; seed) -> index arrays, one per client
Split = Callable[[np.ndarray, int, S, int, int], list[np.ndarray]]


@dataclass(frozen=True)
class Partitioner(Generic[S]):
    """A scheme: its split function and the settings class it reads (its Hydra schema)."""

    name: str
    split: Split[S]
    settings: type[S]


PARTITIONERS: Registry[Partitioner[Any]] = Registry("partitioner")


def register_partitioner(settings: type[S]) -> Callable[[Split[S]], Split[S]]:
    """Decorator registering a split function with its settings class, under the name the
    class defaults to (so the name is written once). The function is returned unchanged."""
    name = getattr(settings, "name", MISSING)
    if not isinstance(name, str) or name == MISSING:
        raise ValueError(f"{settings.__name__} needs a default name (its scheme's name)")

    def add(split: Split[S]) -> Split[S]:
        PARTITIONERS.register(name)(Partitioner(name=name, split=split, settings=settings))
        return split

    return add


def load_partitions(partitioner: Any, num_clients: int) -> list[np.ndarray]:
    """The pool indices (column `idx`) of every partition of a flwr-datasets partitioner. Its
    warnings are silenced: where it cannot satisfy the settings we raise our own DataError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64)
            for i in range(num_clients)
        ]


import_modules(__name__, __path__)  # each scheme's module registers it
