"""Per-client train/test split (PFLlib: 75% train, 25% test, shuffled, seeded)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClientSplit:
    train: np.ndarray  # indices into the pool
    test: np.ndarray


def train_test_split(
    indices: np.ndarray, train_fraction: float, rng: np.random.Generator
) -> ClientSplit:
    """Shuffle a client's indices and cut them; test gets ceil((1 - f) n), at least 1 each."""
    n = len(indices)
    if n < 2:
        raise ValueError(f"a client needs at least 2 samples to split, got {n}")
    n_test = min(max(math.ceil(round((1 - train_fraction) * n, 9)), 1), n - 1)
    order = rng.permutation(indices)
    return ClientSplit(train=order[: n - n_test], test=order[n - n_test :])


def holdout(
    indices: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices into (kept for training, held out for validation)."""
    if fraction <= 0:
        return indices, indices[:0]
    n_val = min(max(math.ceil(fraction * len(indices)), 1), len(indices) - 1)
    order = rng.permutation(len(indices))
    return indices[np.sort(order[n_val:])], indices[np.sort(order[:n_val])]
