"""FLAYER's layer-wise selective upload (Eq. 5-9): which elements of each tensor to keep.

Tensor j of J (parameters() order) withholds the fraction m_j = 1 - min(max(j/J, 0.1), 0.9)
of its least-changed elements, group by group: each k x k kernel of a 4-D weight, the whole
of a 1-D tensor. 2-D (and other) tensors and the last two tensors go in full.
"""

from __future__ import annotations

import numpy as np


def withheld_fraction(j: int, num_tensors: int) -> float:
    """m_j, computed in float64 as the reference does."""
    return 1.0 - min(max(np.float64(j) / np.float64(num_tensors), 0.1), 0.9)


def _grouping(shape: tuple[int, ...], reference_quirks: bool) -> tuple[int, int] | None:
    """(number of groups, group size) for a masked tensor; None when it goes in full.

    A 1x1 convolution has one-element kernels: the kernel rule would withhold it whole. We
    apply the 1-D rule to each output channel's in_channels weights instead; with
    `reference_quirks` the whole tensor is withheld, as in the reference.
    """
    if len(shape) == 4:
        out_c, in_c, kh, kw = shape
        if kh * kw > 1:
            return out_c * in_c, kh * kw
        if reference_quirks:
            return out_c * in_c, 1
        return (out_c, in_c) if in_c >= 2 else None
    if len(shape) == 1:
        return (1, shape[0]) if shape[0] >= 2 else None
    return None


def withheld_per_group(group_size: int, m: float, reference_quirks: bool = False) -> int:
    """round(size * m), half to even, clamped to [1, size - 1] (whole group for quirky 1x1)."""
    if group_size == 1:
        assert reference_quirks
        return 1
    return int(min(max(np.round(group_size * m), 1), group_size - 1))


def is_masked(j: int, shape: tuple[int, ...], num_tensors: int, reference_quirks: bool) -> bool:
    return j < num_tensors - 2 and _grouping(shape, reference_quirks) is not None


def kept_count(j: int, shape: tuple[int, ...], num_tensors: int,
               reference_quirks: bool = False) -> int | None:
    """How many values tensor j keeps; None when it is uploaded in full."""
    if not is_masked(j, shape, num_tensors, reference_quirks):
        return None
    groups, size = _grouping(shape, reference_quirks)  # type: ignore[misc]
    withheld = withheld_per_group(size, withheld_fraction(j, num_tensors), reference_quirks)
    return groups * (size - withheld)


def keep_mask(change: np.ndarray, j: int, num_tensors: int,
              reference_quirks: bool = False) -> np.ndarray | None:
    """Boolean mask of the elements to upload, from |theta_after - theta_before|; None = all.

    In each group the elements with the smallest change are withheld; ties go by the
    smaller flat index first (a stable sort), so every implementation withholds the same.
    """
    shape = tuple(change.shape)
    if not is_masked(j, shape, num_tensors, reference_quirks):
        return None
    groups, size = _grouping(shape, reference_quirks)  # type: ignore[misc]
    withheld = withheld_per_group(size, withheld_fraction(j, num_tensors), reference_quirks)
    flat = change.reshape(groups, size)
    order = np.argsort(flat, axis=1, kind="stable")[:, :withheld]
    mask = np.ones((groups, size), dtype=bool)
    np.put_along_axis(mask, order, False, axis=1)
    return mask.reshape(shape)
