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
from dataclasses import dataclass
from typing import Any

import numpy as np

from flayer.config.schema import Config, PartitionConfig
from flayer.data.partitioners import load_partitions, register_partitioner
from flayer.util.errors import DataError, require

log = logging.getLogger(__name__)

ASSIGNMENTS = ("first-deterministic", "deterministic", "random")


@dataclass
class PathologicalConfig(PartitionConfig):
    """Settings of the pathological scheme (conf/partition/pathological.yaml)."""

    name: str = "pathological"
    # The number of classes each client holds, and how they are picked: "first-deterministic"
    # (with C classes: client k gets class k mod C plus random others, as in Li et al.,
    # "Federated Learning on Non-IID Data Silos"), "deterministic" (classes k, k+1, ... mod C)
    # or "random" (any classes, drawn with the run seed).
    classes_per_client: int = 2
    class_assignment: str = "first-deterministic"

    def check_settings(self, cfg: Config) -> None:
        self.check_classes(None, cfg.dataset.name)
        super().check_settings(cfg)

    def check(self, cfg: Config, pool: int, dataset: str, classes: int | None) -> None:
        self.check_classes(classes, dataset)
        super().check(cfg, pool, dataset, classes)

    def check_classes(self, classes: int | None, dataset: str) -> None:
        """classes_per_client against the class count (where known) and the assignment mode.
        The partitioner checks again with the labels' own count: a source that learns its
        classes from the data knows the count only then."""
        k = self.classes_per_client
        allowed = (f"must be from 1 to {classes} ({dataset} has {classes} classes)" if classes
                   else f"must be from 1 to the number of classes of {dataset}")
        require(k >= 1 and (classes is None or k <= classes), "partition.classes_per_client", k,
                allowed)
        require(self.class_assignment in ASSIGNMENTS, "partition.class_assignment",
                self.class_assignment, f"must be one of {', '.join(ASSIGNMENTS)}")

    def summary_fields(self) -> dict[str, Any]:
        """How many classes a client holds, and which, set how skewed the clients are."""
        return {**super().summary_fields(), "classes_per_client": self.classes_per_client,
                "class_assignment": self.class_assignment}


@register_partitioner(PathologicalConfig)
def pathological(
    labels: np.ndarray, num_clients: int, cfg: PathologicalConfig, min_size: int, seed: int
) -> list[np.ndarray]:
    # here, not at the top: they load torch and Arrow, which no check of a config needs
    from datasets import Dataset
    from flwr_datasets.partitioner import PathologicalPartitioner

    from flayer.util.seeding import rng_for

    k, mode = cfg.classes_per_client, cfg.class_assignment
    classes = np.unique(labels)
    cfg.check_classes(len(classes), "the data")
    order = rng_for(seed, "partition", "pathological").permutation(len(labels))
    partitioner = PathologicalPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        num_classes_per_partition=k,
        class_assignment_mode=mode,  # type: ignore[arg-type]  (check_classes)
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
