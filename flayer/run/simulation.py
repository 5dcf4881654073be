"""Runs a run's apps in Flower's Ray-backed simulation (the only use of run_simulation): a
few executor nodes, each serving cohorts of clients, whose state lives in the run's store."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flayer.apps.actors import RayFailureFilter, end_actors, mute_workers
from flayer.apps.client_app import make_client_app
from flayer.apps.server_app import make_server_app
from flayer.apps.sim_grid import ExecutorLost, Leave, SimulationGrid
from flayer.config.schema import Config
from flayer.protocol.cohorts import default_executors
from flayer.protocol.rounds import RoundCallback
from flayer.run.stops import Stopped, held_signals, raise_if_asked, stop_on_signals
from flayer.state.checkpoint import Checkpointing

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

log = logging.getLogger(__name__)

STOP_WAIT = 30  # seconds a stop waits for Flower and Ray to shut down in order


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
    hands this process's import path to Ray's workers. A SIGTERM that meets ray.init's own
    handler (installed as it starts) is a stop all the same."""
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
    try:
        ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **init)
    except SystemExit as exc:  # the SIGTERM handler ray.init puts in first: sys.exit(15)
        if exc.code != signal.SIGTERM:
            raise
        raise Stopped(signal.SIGTERM) from None


def run_apps(cfg: Config, on_round: RoundCallback, store: Path,
             checkpointing: Checkpointing | None = None) -> None:
    """One Ray simulation of the run's apps, its executors keeping clients' state in the
    store folder; every finished round goes to on_round (then to `checkpointing`).

    Flower runs it in a thread of ours, its round loop in a thread of its own; this (main)
    thread only waits, so that a signal raises `flayer.run.stops.Stopped` here, never inside Ray
    or Flower. On a stop the round loop leaves at its next call to the grid, the executors'
    actors are ended so that Flower's workers return from Ray, and Flower then shuts Ray
    down with no thread inside it (Ray torn down under a thread still in `ray.get` crashes the
    process). An executor lost (its actor died, or no reply within backend.round_timeout)
    ends the simulation the same way after one line in the log: the rounds finished so far
    stand, and the caller sees fewer rounds than asked (`flayer.run.folder.record_run` says so
    and how to continue)."""
    import ray

    saved_path, saved_pp = list(sys.path), os.environ.get("PYTHONPATH")
    flwr_logger = logging.getLogger("flwr")
    saved_level = flwr_logger.level
    flwr_logger.setLevel(logging.ERROR)  # its round-by-round INFO and deprecation notes
    leave = threading.Event()  # the round loop is to leave, or has left, the simulation
    done = threading.Event()  # Flower's simulation has returned (Ray shut down by it)
    quiet = RayFailureFilter(leave)
    flwr_logger.addFilter(quiet)
    sim: threading.Thread | None = None
    try:
        with stop_on_signals():
            # Ray half started is not stopped: a stop waits for it; ray.init also puts in a
            # SIGTERM handler of its own, and ours go back on top as the block ends
            with stop_on_signals(), held_signals():
                start_ray(cfg)
            executors = num_executors(cfg)
            errors: list[BaseException] = []
            sim = threading.Thread(
                target=_simulate, name="flayer-simulation", daemon=True,
                args=(cfg, on_round, store, checkpointing, executors, leave, done, errors))
            try:
                sim.start()
                # an Event, not Thread.join: a join that a signal interrupts marks the thread
                # ended while it runs on (CPython 3.11), and Ray would be shut down under it
                while not done.wait(0.5):
                    raise_if_asked()
                    if leave.is_set():  # the round loop left: nothing is worth waiting for
                        end_actors()
            except Stopped:
                leave.set()
                _wind_down(done)
                raise
            if errors:
                raise errors[0]
    finally:
        leave.set()  # a round loop still waiting for replies (Flower failed) leaves too
        if (sim is None or done.is_set()) and ray.is_initialized():
            with held_signals():
                ray.shutdown()  # where Flower did not: a stop came before it started
        mute_workers(False)
        flwr_logger.removeFilter(quiet)
        flwr_logger.setLevel(saved_level)
        # Flower prepends sys.path to PYTHONPATH on every call; a multirun would grow it.
        sys.path[:] = saved_path
        if saved_pp is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_pp


def _simulate(cfg: Config, on_round: RoundCallback, store: Path,
              checkpointing: Checkpointing | None, executors: int, leave: threading.Event,
              done: threading.Event, errors: list[BaseException]) -> None:
    """Flower's simulation (in its own thread); what it raises goes to `errors`, and `done`
    is set when it returns."""
    from flwr.simulation import run_simulation

    try:
        run_simulation(
            server_app=watched_server_app(make_server_app(cfg, on_round, checkpointing), leave),
            client_app=make_client_app(cfg, store),
            num_supernodes=executors,
            backend_name="ray",
            backend_config=backend_config(cfg),
        )
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        errors.append(exc)
    finally:
        done.set()


def watched_server_app(inner: ServerApp, leave: threading.Event) -> ServerApp:
    """The ServerApp on the watched grid (flayer.apps.sim_grid): it returns when the run is
    told to leave, and after one line in the log when an executor is lost (then `leave` is
    set, and the executors are ended)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            inner(SimulationGrid(grid, leave), context)
        except ExecutorLost as exc:
            if not leave.is_set():
                leave.set()
                log.error("%s; the simulation cannot go on", exc)
                end_actors()
        except Leave:
            pass

    return app


def _wind_down(done: threading.Event) -> None:
    """After a stop: end the executors' actors (again, while new ones may still be starting)
    until Flower has shut the simulation and Ray down, at most STOP_WAIT seconds."""
    deadline = time.monotonic() + STOP_WAIT
    while not done.is_set() and time.monotonic() < deadline:
        end_actors()
        done.wait(0.2)
    if not done.is_set():  # not shut down in order: it goes with this process
        log.warning("the simulation did not end within %d s of the stop", STOP_WAIT)
