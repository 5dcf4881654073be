"""Pure aggregation on named arrays: sample-weighted means, per element where masks say so.

Every method's aggregation is a (masked) weighted mean, so contributions can be summed where
they are made and the sums combined later: a simulated executor sums the clients it served,
the server adds those partial sums. `WeightedSum` is that running sum (float64, filled in the
order contributions are added: partition-id order within a sum); `aggregate` is the mean of a
list of contributions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Contribution:
    """One client's upload: full tensors, or for masked keys the mask and its kept values."""

    weight: float
    arrays: Mapping[str, np.ndarray]  # key -> full tensor, or 1-D kept values if masked
    masks: Mapping[str, np.ndarray] = field(default_factory=dict)  # key -> bool, tensor's shape


@dataclass
class WeightedSum:
    """Per key, the weighted sum of the values sent (`num`) and the weight behind each element
    (`den`: one number while every sender sent the tensor whole, else one per element)."""

    num: dict[str, np.ndarray] = field(default_factory=dict)
    den: dict[str, np.ndarray] = field(default_factory=dict)  # float64, shape () or the tensor's

    @classmethod
    def of(cls, contributions: Iterable[Contribution]) -> WeightedSum:
        total = cls()
        for c in contributions:
            total.add(c)
        return total

    def add(self, c: Contribution) -> None:
        for key, sent in c.arrays.items():
            values = np.asarray(sent, dtype=np.float64)
            mask = c.masks.get(key)
            if mask is None:
                self._add(key, c.weight * values, np.float64(c.weight), values.shape)
            else:
                num = np.zeros(mask.shape, dtype=np.float64)
                num[mask] = c.weight * values
                self._add(key, num, np.where(mask, c.weight, 0.0), mask.shape)

    def merge(self, other: WeightedSum) -> None:
        for key, num in other.num.items():
            self._add(key, num, other.den[key], num.shape)

    def _add(self, key: str, num: np.ndarray, den: np.ndarray, shape: tuple[int, ...]) -> None:
        if key not in self.num:
            self.num[key] = np.zeros(shape, dtype=np.float64)
            self.den[key] = np.float64(0.0)
        if self.num[key].shape != tuple(shape):
            raise ValueError(f"{key}: shape {tuple(shape)} against {self.num[key].shape}")
        self.num[key] += num
        self.den[key] = self.den[key] + den

    def mean(self, previous: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """New arrays: per element the weighted mean over its senders; what nobody sent keeps
        its previous value (and dtype)."""
        out: dict[str, np.ndarray] = {}
        for key, old in previous.items():
            if key not in self.num:
                out[key] = old.copy()
                continue
            num, den = self.num[key], self.den[key]
            if np.ndim(den) == 0:
                out[key] = (num / den).astype(old.dtype) if den > 0 else old.copy()
            else:
                mean = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
                out[key] = np.where(den > 0, mean, old).astype(old.dtype)
        return out

    def items(self) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
        for key, num in self.num.items():
            yield key, num, np.asarray(self.den[key], dtype=np.float64)

    @classmethod
    def from_items(cls, items: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> WeightedSum:
        total = cls()
        for key, num, den in items:
            num = np.asarray(num, dtype=np.float64)
            den = np.asarray(den, dtype=np.float64)
            if den.size == 1 and den.shape != num.shape:  # one weight for the whole tensor
                den = np.float64(den.reshape(()))
            elif den.shape != num.shape:
                raise ValueError(f"{key}: weights of shape {den.shape} for values {num.shape}")
            total._add(key, num, den, num.shape)
        return total


def aggregate(
    contributions: Sequence[Contribution], previous: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """New global arrays: for each element, the weighted mean over the clients that uploaded
    it; elements (or whole tensors) that nobody uploaded keep their previous value."""
    return WeightedSum.of(contributions).mean(previous)


def weighted_mean(values: Sequence[float], weights: Sequence[float]) -> float:
    total = float(sum(weights))
    if total <= 0:
        return float("nan")
    return float(sum(v * w for v, w in zip(values, weights, strict=True)) / total)
