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
from flayer.state.checkpoint import Checkpointing
from flayer.stops import stop_on_signals
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
    on this machine, or on the cluster at backend.address (Ray already attached to it)."""
    if cfg.backend.executors is not None or not cfg.backend.address:
        cpus = float(cfg.backend.num_cpus or os.cpu_count() or 1)
        cuda = torch.cuda.is_available() and cfg.device != "cpu"
        gpus = float(torch.cuda.device_count()) if cuda else 0.0
        return default_executors(cfg, cpus, gpus, gpu_share(cfg))
    import ray

    have = ray.cluster_resources()
    return default_executors(cfg, float(have.get("CPU", 1.0)), float(have.get("GPU", 0.0)),
                             gpu_share(cfg))


def start_ray(cfg: Config) -> None:
    """Ray for this run, started (or attached to) here rather than by Flower, so that the
    run's own signal handlers come after Ray's; Flower then uses it as it is. Like Flower, it
    hands this process's import path to Ray's workers."""
    import ray

    if ray.is_initialized():
        return
    init = dict(backend_config(cfg)["init_args"])
    init.setdefault("include_dashboard", False)
    init.setdefault("logging_level", logging.WARNING)
    pythonpath = os.pathsep.join(sys.path)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **init)


def run_apps(cfg: Config, on_round: RoundCallback, store: Path,
             checkpointing: Checkpointing | None = None) -> None:
    """One Ray simulation of the run's apps, its executors keeping clients' state in the
    store folder; every finished round goes to on_round (then to `checkpointing`). SIGINT and
    SIGTERM raise `flayer.stops.Stopped` here (see flayer.stops)."""
    from flwr.simulation import run_simulation

    saved_path, saved_pp = list(sys.path), os.environ.get("PYTHONPATH")
    flwr_logger = logging.getLogger("flwr")
    saved_level = flwr_logger.level
    flwr_logger.setLevel(logging.ERROR)  # its round-by-round INFO and deprecation notes
    try:
        start_ray(cfg)
        executors = num_executors(cfg)
        with stop_on_signals():
            run_simulation(
                server_app=make_server_app(cfg, on_round, checkpointing),
                client_app=make_client_app(cfg, store),
                num_supernodes=executors,
                backend_name="ray",
                backend_config=backend_config(cfg),
            )
    finally:
        import ray

        if ray.is_initialized():  # Flower shuts Ray down; a stop may come before it does
            ray.shutdown()
        # Flower prepends sys.path to PYTHONPATH on every call; a multirun would grow it.
        flwr_logger.setLevel(saved_level)
        sys.path[:] = saved_path
        if saved_pp is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_pp
