"""Process-level set-up shared by the apps: device choice, torch threads, logging."""

from __future__ import annotations

import functools
import logging

import torch

from flayer.config.schema import Config


def pick_device(cfg: Config) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


@functools.lru_cache(maxsize=1)
def set_threads(n: int) -> None:
    """Torch threads for this process: one per CPU the actor was given."""
    torch.set_num_threads(max(1, n))


@functools.lru_cache(maxsize=1)
def show_info_logs() -> None:
    """flayer's INFO messages on stderr in processes Flower starts (ServerApp, ClientApp),
    where nothing configures logging; `flwr run --stream` and SuperNode logs then show them."""
    logger = logging.getLogger("flayer")
    if logger.handlers or logger.level not in (logging.NOTSET, logging.INFO):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
