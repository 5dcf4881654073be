"""Seeds: every random stream is derived from the run seed plus what it is for."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch only where a torch stream is asked for: settings checks stay light
    import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from the run seed and a purpose (e.g. "train", client id, version)."""
    text = "/".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def rng_for(seed: int, *parts: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *parts))


def torch_generator(seed: int, *parts: object) -> torch.Generator:
    import torch

    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, *parts))
    return gen
