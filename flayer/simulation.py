"""Runs a run's apps in Flower's Ray-backed simulation (the only use of run_simulation): a
few executor nodes, each serving cohorts of clients, whose state lives in the run's store."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from flayer.apps.client_app import make_client_app
from flayer.apps.server_app import make_server_app
from flayer.cohorts import default_executors
from flayer.config import Config
from flayer.strategy import RoundCallback

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

log = logging.getLogger(__name__)


def gpu_share(cfg: Config) -> float:
    """Each executor's share of a GPU: backend.client_gpus, else 0.25 where CUDA is used."""
    if cfg.backend.client_gpus is not None:
        return cfg.backend.client_gpus
    return 0.25 if torch.cuda.is_available() and cfg.device != "cpu" else 0.0


def backend_config(cfg: Config) -> dict[str, Any]:
    """Flower's Ray backend settings. With `backend.address` the run attaches to that running
    cluster and passes no resource counts (its machines say what they have); without it the
    run starts a private Ray instance (address "local"), even where RAY_ADDRESS names a
    cluster or one left by `ray start` runs on the machine, since attaching to one by surprise
    refuses our resource counts."""
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    init: dict[str, Any] = {"log_to_driver": True}
    if cfg.backend.address:
        init["address"] = cfg.backend.address
    else:
        init.update(address="local", num_cpus=cfg.backend.num_cpus or os.cpu_count() or 1,
                    include_dashboard=False)
        if cuda:
            init["num_gpus"] = torch.cuda.device_count()
    return {
        "client_resources": {"num_cpus": cfg.backend.client_cpus, "num_gpus": gpu_share(cfg)},
        "init_args": init,
    }


def num_executors(cfg: Config) -> int:
    """The simulation's executor nodes: backend.executors, else as many as Ray runs at once
    on this machine, or on the cluster at backend.address (asked before the run starts)."""
    if cfg.backend.executors is not None or not cfg.backend.address:
        cpus = float(cfg.backend.num_cpus or os.cpu_count() or 1)
        cuda = torch.cuda.is_available() and cfg.device != "cpu"
        gpus = float(torch.cuda.device_count()) if cuda else 0.0
        return default_executors(cfg, cpus, gpus, gpu_share(cfg))
    import ray

    ray.init(address=cfg.backend.address, log_to_driver=False)
    try:
        have = ray.cluster_resources()
    finally:
        ray.shutdown()
    return default_executors(cfg, float(have.get("CPU", 1.0)), float(have.get("GPU", 0.0)),
                             gpu_share(cfg))


def run_apps(cfg: Config, on_round: RoundCallback, store: Path) -> None:
    """One Ray simulation of the run's apps, its executors keeping clients' state in the
    store folder; every finished round goes to on_round."""
    from flwr.simulation import run_simulation

    saved_path, saved_pp = list(sys.path), os.environ.get("PYTHONPATH")
    flwr_logger = logging.getLogger("flwr")
    saved_level = flwr_logger.level
    flwr_logger.setLevel(logging.ERROR)  # its round-by-round INFO and deprecation notes
    try:
        run_simulation(
            server_app=make_server_app(cfg, on_round),
            client_app=make_client_app(cfg, store),
            num_supernodes=num_executors(cfg),
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
