"""Compose conf/ outside of run.py (the apps under `flwr run`, tests, benchmarks)."""

from __future__ import annotations

import functools
import shlex
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from flayer.config.schema import Config, to_config
from flayer.config.store import register_schemas

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_dict(overrides: Sequence[str] = ()) -> DictConfig:
    """conf/ composed with Hydra overrides, as run.py would compose it (inside run.py, with
    the Hydra it runs in)."""
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=list(overrides))
    if not CONF_DIR.is_dir():
        raise FileNotFoundError(f"no conf/ folder at {CONF_DIR}; install flayer with pip -e")
    register_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@functools.lru_cache(maxsize=8)
def config_from_overrides(overrides: str) -> Config:
    """A typed config from one string of Hydra overrides (Flower's run config carries one)."""
    return to_config(compose_dict(shlex.split(overrides)))


DEPLOY_BACKEND = "deploy"


def deployed_overrides(overrides: str) -> str:
    """The overrides of a `flwr run`: the deployment backend (node waits, round timeout)
    unless the overrides choose a backend themselves."""
    chosen = {o.split("=", 1)[0].lstrip("+~") for o in shlex.split(overrides)}
    if "backend" in chosen:
        return overrides
    return f"backend={DEPLOY_BACKEND} {overrides}".strip()
