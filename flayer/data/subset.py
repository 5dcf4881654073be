"""A share of a dataset's pool (`dataset.fraction`), for runs that must be small: a quick
trial on the real data, a smoke test.

The share is a uniform random subset of the pool's indices, drawn from the run seed and taken
before the partitioner splits the pool over the clients. It is not stratified by label: the
subset is then known from the pool's size alone, before any sample is decoded (the size checks
run on it), and the partitioner, not the subset, decides each client's label mix; a uniform
draw keeps the pool's class shares up to sampling noise. The decoded pool itself stays whole
on disk, so the subset's indices, and the splits made from it, index the full pool.
"""

from __future__ import annotations

import numpy as np

from flayer.util.errors import require
from flayer.util.seeding import rng_for


def check_fraction(fraction: float) -> None:
    require(0 < fraction <= 1, "dataset.fraction", fraction,
            "must be in (0, 1]: the share of the pool the clients are cut from (1 = all)")


def refuse_fraction(fraction: float, data: str) -> None:
    """ConfigError for a share of data that is not one pool cut over the clients (a source
    with its own clients, a node's own folder): no pool to take it from."""
    require(fraction == 1, "dataset.fraction", fraction,
            f"must be 1 for {data}: the share is taken of one pool before it is split over "
            "the clients")


def subset_size(pool: int, fraction: float) -> int:
    """Samples in the share of a pool of `pool` samples (at least 1)."""
    return pool if fraction >= 1 else max(1, round(fraction * pool))


def pool_subset(pool: int, fraction: float, seed: int) -> np.ndarray | None:
    """The sorted pool indices of the share, or None for the whole pool (fraction 1)."""
    if fraction >= 1:
        return None
    rng = rng_for(seed, "pool-subset")
    return np.sort(rng.choice(pool, size=subset_size(pool, fraction), replace=False))


def described(dataset: str, fraction: float) -> str:
    """How messages about the pool's size name it: the share, where one is taken."""
    return dataset if fraction >= 1 else f"{dataset} at dataset.fraction={fraction}"
