"""Runs a run's apps in Flower's Ray-backed simulation (the only use of run_simulation)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import torch

from flayer.apps.client_app import make_client_app
from flayer.apps.server_app import make_server_app
from flayer.config import Config
from flayer.strategy import RoundCallback

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

log = logging.getLogger(__name__)


def backend_config(cfg: Config) -> dict[str, Any]:
    """Flower's Ray backend settings. With `backend.address` the run attaches to that running
    cluster and passes no resource counts (its machines say what they have); without it the
    run starts a private Ray instance (address "local"), even where RAY_ADDRESS names a
    cluster or one left by `ray start` runs on the machine, since attaching to one by surprise
    refuses our resource counts."""
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    gpus = cfg.backend.client_gpus
    if gpus is None:
        gpus = 0.25 if cuda else 0.0
    init: dict[str, Any] = {"log_to_driver": True}
    if cfg.backend.address:
        init["address"] = cfg.backend.address
    else:
        init.update(address="local", num_cpus=cfg.backend.num_cpus or os.cpu_count() or 1,
                    include_dashboard=False)
        if cuda:
            init["num_gpus"] = torch.cuda.device_count()
    return {
        "client_resources": {"num_cpus": cfg.backend.client_cpus, "num_gpus": gpus},
        "init_args": init,
    }


def run_apps(cfg: Config, on_round: RoundCallback) -> None:
    """One Ray simulation of the run's apps; every finished round goes to on_round."""
    from flwr.simulation import run_simulation

    saved_path, saved_pp = list(sys.path), os.environ.get("PYTHONPATH")
    flwr_logger = logging.getLogger("flwr")
    saved_level = flwr_logger.level
    flwr_logger.setLevel(logging.ERROR)  # its round-by-round INFO and deprecation notes
    try:
        run_simulation(
            server_app=make_server_app(cfg, on_round),
            client_app=make_client_app(cfg),
            num_supernodes=cfg.num_clients,
            backend_name="ray",
            backend_config=backend_config(cfg),
        )
    finally:
        # Flower prepends sys.path to PYTHONPATH on every call; a multirun would grow it.
        flwr_logger.setLevel(saved_level)
        sys.path[:] = saved_path
        if saved_pp is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_pp
