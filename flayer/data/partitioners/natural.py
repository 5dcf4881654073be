"""Natural clients: the data's own clients, named by a column of its samples (FEMNIST's
writers, the hub Shakespeare's speaking roles), through flwr-datasets' NaturalIdPartitioner.

The scheme splits by the column `partition.partition_by` names (null: the dataset's first
client column, `DataSource.client_columns`), not by the labels, so its split function receives
that column's values; they are read without decoding any sample, so that a bad column or too
many clients is refused before the pool is decoded.

Which clients: one per value of the column. A client with fewer samples than the least size
(`partition.min_partition_size`; null: 2, a train and a test sample, or more where the data is
split in time, see `DataSource.time_gap`) is left out, as LEAF's `-k` leaves small users out.
`num_clients` takes that many of the others: the first num_clients of one permutation of them
seeded by the run seed, so a run with fewer clients has a subset of a larger run's clients,
with the same ids. This is the rule dataset=shakespeare's local source follows for its roles,
for the same reasons: LEAF samples its users at random, and a sample keeps the data's spread of
client sizes, where the largest clients would be the slowest ones and the least federated
data. More clients than there are is refused, naming num_clients.

`dataset.fraction` does not apply: a client is all of its samples (num_clients takes fewer
clients instead).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from flayer.config.schema import Config, PartitionConfig
from flayer.data.partitioners import PARTITIONERS, register_partitioner
from flayer.util.errors import ConfigError, require

LEAST = 2  # a client needs a train and a test sample


@dataclass
class NaturalConfig(PartitionConfig):
    """Settings of the natural scheme (conf/partition/natural.yaml)."""

    name: str = "natural"
    # The column whose values are the clients (femnist: writer_id or hsf_id; shakespeare_hub:
    # character_id); null = the dataset's first client column.
    partition_by: str | None = None

    def check_settings(self, cfg: Config) -> None:
        require(self.partition_by is None or bool(str(self.partition_by).strip()),
                "partition.partition_by", self.partition_by,
                "must name a client column of the dataset, or be null for its first one")
        require(cfg.dataset.fraction == 1, "dataset.fraction", cfg.dataset.fraction,
                "must be 1 with partition=natural: a client is all of its samples (take fewer "
                "clients with num_clients)")
        super().check_settings(cfg)

    def least_size(self, pool: int, num_clients: int) -> int:
        """The setting, else 2: a natural client's size is the data's, not a share of the pool,
        so the pool's size sets no least size."""
        return LEAST if self.min_partition_size is None else self.min_partition_size

    def split_column(self, dataset: str, offered: tuple[str, ...]) -> str | None:
        if not offered:
            others = ", ".join(n for n in PARTITIONERS.names() if n != self.name)
            raise ConfigError("partition", self.name,
                              f"needs a dataset whose samples name their clients, and "
                              f"dataset={dataset} has no client column; choose another "
                              f"partition ({others}) or another dataset")
        if self.partition_by is None:
            return offered[0]
        require(self.partition_by in offered, "partition.partition_by", self.partition_by,
                f"must be one of {', '.join(offered)} (the client columns of {dataset}), or "
                f"null for {offered[0]}")
        return self.partition_by

    def summary_fields(self) -> dict[str, Any]:
        """Which column the clients are (null: the dataset's first client column)."""
        return {**super().summary_fields(), "partition_by": self.partition_by}


@register_partitioner(NaturalConfig)
def natural(
    clients: np.ndarray, num_clients: int, cfg: NaturalConfig, min_size: int, seed: int
) -> list[np.ndarray]:
    """`clients`: each sample's value of the client column."""
    # here, not at the top: they load torch and Arrow, which no check of a config needs
    from datasets import Dataset
    from flwr_datasets.partitioner import NaturalIdPartitioner

    from flayer.util.seeding import rng_for

    # each client as the rank of its value among the sorted values: light for the
    # partitioner's own pass over millions of samples, whatever the values are
    values, codes, sizes = np.unique(np.asarray(clients), return_inverse=True,
                                     return_counts=True)
    eligible = np.flatnonzero(sizes >= min_size)
    column = cfg.partition_by or "the dataset's client column"
    require(num_clients <= len(eligible), "num_clients", num_clients,
            f"must be at most {len(eligible)}: the data has {len(values)} clients by {column}, "
            f"{len(eligible)} of them with at least {min_size} samples, the least a client may "
            "hold (partition.min_partition_size; data split in time needs a test window)")
    chosen = rng_for(seed, "partition", "natural").permutation(eligible)[:num_clients]
    partitioner = NaturalIdPartitioner(partition_by="client")
    # arrow format: the partitioner reads whole columns, which `datasets` would otherwise
    # build row by row (minutes for millions of samples)
    partitioner.dataset = Dataset.from_dict({
        "client": codes.ravel(), "idx": np.arange(len(codes), dtype=np.int64)
    }).with_format("arrow")
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar over the samples
        if partitioner.num_partitions != len(values):  # numbers the clients (asked first)
            raise RuntimeError("NaturalIdPartitioner numbered the clients otherwise")
        partition_of = {int(v): p for p, v in partitioner.partition_id_to_natural_id.items()}
        return [np.asarray(partitioner.load_partition(partition_of[int(k)])["idx"],
                           dtype=np.int64) for k in chosen]
