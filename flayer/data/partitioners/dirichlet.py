"""Dirichlet label skew via flwr-datasets' DirichletPartitioner (self-balancing, seeded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from flayer.config.schema import Config, PartitionConfig
from flayer.data.partitioners import load_partitions, register_partitioner
from flayer.util.errors import DataError, require


@dataclass
class DirichletConfig(PartitionConfig):
    """Settings of the Dirichlet scheme (conf/partition/dirichlet.yaml)."""

    name: str = "dirichlet"
    alpha: float = 0.1  # concentration: small = few classes per client, large = close to IID

    def check_settings(self, cfg: Config) -> None:
        require(self.alpha > 0, "partition.alpha", self.alpha, "must be > 0")
        super().check_settings(cfg)

    def summary_fields(self) -> dict[str, Any]:
        """alpha sets how skewed the clients are, so a result means nothing without it."""
        return {**super().summary_fields(), "alpha": self.alpha}


@register_partitioner(DirichletConfig)
def dirichlet(
    labels: np.ndarray, num_clients: int, cfg: DirichletConfig, min_size: int, seed: int
) -> list[np.ndarray]:
    # here, not at the top: they load torch and Arrow, which no check of a config needs
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner

    table = Dataset.from_dict({"label": labels, "idx": np.arange(len(labels), dtype=np.int64)})
    partitioner = DirichletPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        alpha=cfg.alpha,
        min_partition_size=min_size,
        self_balancing=True,
        shuffle=True,
        seed=seed,
    )
    partitioner.dataset = table
    try:
        return load_partitions(partitioner, num_clients)  # silences a warning per attempt
    except ValueError as exc:
        if "max number of attempts" not in str(exc):
            raise
        raise DataError(
            f"Dirichlet(alpha={cfg.alpha}) could not give each of {num_clients} clients at "
            f"least {min_size} samples of {len(labels)} in 10 attempts (seed {seed}); use fewer "
            "clients (num_clients), a larger partition.alpha, or a smaller "
            "partition.min_partition_size"
        ) from None
