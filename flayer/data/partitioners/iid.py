"""IID: every client gets an equal random share of the pool (flwr-datasets' IidPartitioner).

IidPartitioner cuts the dataset into contiguous shards in the order it is given and draws no
random numbers, so the indices are shuffled first with a generator from the run seed: the
same seed gives the same clients, another seed other clients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flayer.config.schema import PartitionConfig
from flayer.data.partitioners import load_partitions, register_partitioner
from flayer.util.errors import DataError


@dataclass
class IidConfig(PartitionConfig):
    """Settings of the IID scheme (conf/partition/iid.yaml): only the shared ones, whose rules
    the base class checks."""

    name: str = "iid"


@register_partitioner(IidConfig)
def iid(
    labels: np.ndarray, num_clients: int, cfg: IidConfig, min_size: int, seed: int
) -> list[np.ndarray]:
    """Shards of sizes that differ by at most one (the first n mod num_clients get one more)."""
    # here, not at the top: they load torch and Arrow, which no check of a config needs
    from datasets import Dataset
    from flwr_datasets.partitioner import IidPartitioner

    from flayer.util.seeding import rng_for

    smallest = len(labels) // num_clients
    if smallest < min_size:
        raise DataError(
            f"IID shares of {len(labels)} samples over {num_clients} clients hold {smallest} "
            f"samples, fewer than the least allowed ({min_size}); use fewer clients "
            "(num_clients) or a smaller partition.min_partition_size"
        )
    order = rng_for(seed, "partition", "iid").permutation(len(labels))
    partitioner = IidPartitioner(num_partitions=num_clients)
    partitioner.dataset = Dataset.from_dict({"idx": order})
    return load_partitions(partitioner, num_clients)
