"""Pathological label skew: each client holds samples of only `classes_per_client` classes
(flwr-datasets' PathologicalPartitioner; each class is split evenly among the clients that
hold it).

The partitioner splits a class into contiguous runs in the order it is given, so the indices
are shuffled first with a generator from the run seed: which samples of a class a client gets
then changes with the seed even when the class assignment is deterministic. Classes that no
client draws (fewer clients than classes, or "random" assignment) belong to no client; a
warning names them.
"""

from __future__ import annotations

import logging

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import PathologicalPartitioner

from flayer.config import PartitionConfig
from flayer.data.partitioners import PARTITIONERS, load_partitions
from flayer.errors import DataError
from flayer.seeding import rng_for

log = logging.getLogger(__name__)

ASSIGNMENTS = ("first-deterministic", "deterministic", "random")


@PARTITIONERS.register("pathological")
def pathological(
    labels: np.ndarray, num_clients: int, cfg: PartitionConfig, min_size: int, seed: int
) -> list[np.ndarray]:
    k, mode = cfg.classes_per_client, cfg.class_assignment
    classes = np.unique(labels)
    if not 1 <= k <= len(classes):
        raise DataError(
            f"partition.classes_per_client={k}, but the data has {len(classes)} classes; "
            f"use a value from 1 to {len(classes)}"
        )
    if mode not in ASSIGNMENTS:
        raise DataError(
            f"partition.class_assignment={mode!r} is not one of {', '.join(ASSIGNMENTS)}"
        )
    order = rng_for(seed, "partition", "pathological").permutation(len(labels))
    partitioner = PathologicalPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        num_classes_per_partition=k,
        class_assignment_mode=mode,  # type: ignore[arg-type]  (checked above)
        shuffle=True,
        seed=seed,
    )
    partitioner.dataset = Dataset.from_dict({"label": labels[order], "idx": order})
    try:
        parts = load_partitions(partitioner, num_clients)  # its warning names a stale option
    except ValueError as exc:
        if "is needed to be assigned to more partitions" not in str(exc):
            raise
        raise DataError(
            f"{num_clients} clients with {k} classes each ({mode} assignment, seed {seed}) "
            "ask for more shares of a class than it has samples; use fewer clients "
            "(num_clients), fewer partition.classes_per_client, or "
            "partition.class_assignment=deterministic"
        ) from None
    _check_sizes(parts, labels, min_size, k, mode, seed)
    unused = np.setdiff1d(classes, labels[np.concatenate(parts)])
    if len(unused):
        log.warning(
            "pathological partition: no client holds classes %s (%d samples left out); more "
            "clients or more partition.classes_per_client would use them",
            unused.tolist(), int(np.isin(labels, unused).sum()),
        )
    return parts


def _check_sizes(
    parts: list[np.ndarray], labels: np.ndarray, min_size: int, k: int, mode: str, seed: int
) -> None:
    """Client sizes follow from the class counts, so a small client can only be refused."""
    sizes = [len(p) for p in parts]
    smallest = int(np.argmin(sizes))
    if sizes[smallest] < max(min_size, 2):
        raise DataError(
            f"pathological partition ({k} classes per client, {mode} assignment, seed {seed}) "
            f"gives client {smallest} {sizes[smallest]} of {len(labels)} samples, fewer than "
            f"the least allowed ({max(min_size, 2)}); use fewer clients (num_clients), another "
            "partition.classes_per_client, partition.class_assignment=deterministic (the most "
            "even), or a smaller partition.min_partition_size"
        )
