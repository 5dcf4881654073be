"""Per-client train/test split: PFLlib's (75% train, 25% test, shuffled, seeded), or in time
for samples that are overlapping windows of one text (Shakespeare's next-character task, where
a shuffle would put nearly the same window in train and test)."""

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


def time_split_sizes(n: int, train_fraction: float, gap: int) -> tuple[int, int]:
    """(train, test) counts of n consecutive windows split in time: train the first
    max(1, floor(f n)), test the last ones, after `gap` windows that neither uses (with windows
    of `gap` characters, the test windows then start after the last training target)."""
    num_train = max(1, int(train_fraction * n))
    return num_train, max(0, n - num_train - gap)


def least_for_time_split(train_fraction: float, gap: int) -> int:
    """The fewest consecutive windows whose split in time leaves a test window."""
    n = gap + 2
    while time_split_sizes(n, train_fraction, gap)[1] < 1:
        n += 1
    return n


def client_split(indices: np.ndarray, train_fraction: float, rng: np.random.Generator,
                 gap: int = 0) -> ClientSplit:
    """A client's train/test split: shuffled (`train_test_split`) where its samples are
    independent (gap 0); else its samples in pool order, which is their order in the text,
    split in time leaving `gap` windows out (`time_split_sizes`)."""
    if gap == 0:
        return train_test_split(indices, train_fraction, rng)
    order = np.sort(indices)
    num_train, num_test = time_split_sizes(len(order), train_fraction, gap)
    if num_test < 1:
        raise ValueError(f"a client of {len(order)} windows has none left for testing after "
                         f"its {num_train} training windows and a gap of {gap}")
    return ClientSplit(train=order[:num_train], test=order[len(order) - num_test:])


def holdout(
    indices: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices into (kept for training, held out for validation)."""
    if fraction <= 0:
        return indices, indices[:0]
    n_val = min(max(math.ceil(fraction * len(indices)), 1), len(indices) - 1)
    order = rng.permutation(len(indices))
    return indices[np.sort(order[n_val:])], indices[np.sort(order[:n_val])]
