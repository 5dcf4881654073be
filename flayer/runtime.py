"""Process-level set-up shared by the apps: device choice and torch threads."""

from __future__ import annotations

import functools

import torch

from flayer.config import Config


def pick_device(cfg: Config) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


@functools.lru_cache(maxsize=1)
def set_threads(n: int) -> None:
    """Torch threads for this process: one per CPU the actor was given."""
    torch.set_num_threads(max(1, n))
