"""Pure aggregation on named arrays: sample-weighted means, per element where masks say so."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Contribution:
    """One client's upload: full tensors, or for masked keys the mask and its kept values."""

    weight: float
    arrays: Mapping[str, np.ndarray]  # key -> full tensor, or 1-D kept values if masked
    masks: Mapping[str, np.ndarray] = field(default_factory=dict)  # key -> bool, tensor's shape


def aggregate(
    contributions: Sequence[Contribution], previous: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """New global arrays: for each element, the weighted mean over the clients that uploaded
    it; elements (or whole tensors) that nobody uploaded keep their previous value."""
    out: dict[str, np.ndarray] = {}
    for key, old in previous.items():
        senders = [c for c in contributions if key in c.arrays]
        if not senders:
            out[key] = old.copy()
        elif not any(key in c.masks for c in senders):
            total = sum(c.weight for c in senders)
            acc = np.zeros(old.shape, dtype=np.float64)
            for c in senders:
                acc += c.weight * np.asarray(c.arrays[key], dtype=np.float64)
            out[key] = (acc / total).astype(old.dtype)
        else:
            out[key] = _masked_mean(key, senders, old)
    return out


def _masked_mean(key: str, senders: Sequence[Contribution], old: np.ndarray) -> np.ndarray:
    num = np.zeros(old.shape, dtype=np.float64)
    den = np.zeros(old.shape, dtype=np.float64)
    for c in senders:
        values = np.asarray(c.arrays[key], dtype=np.float64)
        if key in c.masks:
            mask = c.masks[key]
            num[mask] += c.weight * values
            den[mask] += c.weight
        else:
            num += c.weight * values
            den += c.weight
    mean = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return np.where(den > 0, mean, old).astype(old.dtype)


def weighted_mean(values: Sequence[float], weights: Sequence[float]) -> float:
    total = float(sum(weights))
    if total <= 0:
        return float("nan")
    return float(sum(v * w for v, w in zip(values, weights, strict=True)) / total)
