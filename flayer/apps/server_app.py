"""The one ServerApp: builds the initial model and the configured method's round loop and
runs it; every finished round goes to the given callback.

Under `flwr run` it runs next to the SuperLink, which need not hold any data: where the
dataset fixes the model's input spec (Fashion-MNIST) the model is built without data, and the
settings that need the data are then checked by each SuperNode on its own data."""

from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from torch import nn

from flayer.apps.runtime import set_threads, show_info_logs
from flayer.config.compose import compose_dict, deployed_overrides
from flayer.config.schema import Config
from flayer.config.validation import validate
from flayer.data.federated import dataset
from flayer.data.node import static_spec
from flayer.data.source import DataSpec
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.protocol import keys
from flayer.protocol.catalog import METHODS
from flayer.protocol.cohorts import ExecutorPool
from flayer.protocol.instructions import NewMessage, flower_message
from flayer.protocol.roster import Routing
from flayer.protocol.rounds import RoundCallback, RoundLoop
from flayer.results.record import RoundRecord
from flayer.run.folder import plan_run, run_plan
from flayer.state.checkpoint import Checkpointing
from flayer.util.errors import ConfigError, require

log = logging.getLogger(__name__)


def model_spec(cfg: Config) -> DataSpec:
    """The model's input spec: from the dataset itself where it is fixed, else from the data
    (a vocabulary learnt from the training samples needs the data on this host)."""
    return static_spec(cfg) or dataset(cfg).spec


def build_loop(cfg: Config, routing: Routing | None = None,
               new_message: NewMessage = flower_message) -> tuple[RoundLoop, nn.Module]:
    """The run's initial model and the round loop of the configured method, holding that
    model as its first global model."""
    model = build_model(cfg, model_spec(cfg))
    method = METHODS.get(cfg.strategy.name)
    loop = RoundLoop(cfg, method.build_server(cfg, LayerMap(model)),
                     train_metrics=method.client.train_metrics, routing=routing,
                     new_message=new_message)
    loop.set_initial(model)
    return loop, model


def run_server(grid: Grid, cfg: Config, on_round: RoundCallback | None = None,
               routing: Routing | None = None, checkpointing: Checkpointing | None = None,
               new_message: NewMessage = flower_message) -> RoundLoop:
    """The round loop on this grid: a node per client, unless `routing` says otherwise (the
    simulation's executor pool); with `checkpointing`, continuing from its server state and
    writing a checkpoint after each round it asks for (once the round's rows are written)."""
    set_threads(int(cfg.backend.client_cpus))
    loop, _ = build_loop(cfg, routing, new_message)
    start = 0
    if checkpointing is not None:
        loop.run_instructions[keys.RUN_KEY] = checkpointing.run_key
        loop.run_instructions[keys.CHECKPOINT_ROUND] = checkpointing.last_round
        if checkpointing.resume_from is not None:
            loop.restore(checkpointing.resume_from)
            start = checkpointing.start_round()

    def finished(rec: RoundRecord) -> None:
        if on_round is not None:
            on_round(rec)
        if checkpointing is not None:
            checkpointing.save(loop.server_state(rec.round))
            loop.run_instructions[keys.CHECKPOINT_ROUND] = checkpointing.last_round

    loop.run(grid, finished, start)
    return loop


def check_deployed(cfg: Config) -> None:
    """Everything that can fail on bad input before a deployed run starts. Without the data
    on this host the data checks are left to the nodes; the rest is checked here."""
    b = cfg.backend
    require(b.min_nodes is None or 1 <= b.min_nodes <= cfg.num_clients, "backend.min_nodes",
            b.min_nodes, f"must be in 1..num_clients ({cfg.num_clients}) or null for all")
    require(b.node_wait >= 0, "backend.node_wait", b.node_wait, "must be >= 0 seconds")
    try:
        validate(cfg)
        return
    except ConfigError as exc:
        if exc.setting != "dataset.path":
            raise
        log.warning("no %s data on this host (%s); the SuperNodes check their own",
                    cfg.dataset.name, exc)
    model = build_model(cfg, model_spec(cfg))
    METHODS.get(cfg.strategy.name).settings.check(cfg.strategy, cfg, LayerMap(model))


def run_deployed(grid: Grid, context: Context, new_message: NewMessage = flower_message
                 ) -> Path:
    """Under `flwr run`: compose the config from the run config, check it, and write a run
    directory under the run config's output directory (on the host running the ServerApp);
    with `resume=RUN_DIR` in the overrides, continue that run folder from its checkpoint
    (its SuperNodes find their state by the folder's key)."""
    overrides = shlex.split(deployed_overrides(str(context.run_config.get(keys.RUN_OVERRIDES,
                                                                           ""))))
    dcfg = compose_dict(overrides)
    if dcfg.resume == "auto":
        raise ConfigError("resume", "auto", "under flwr run, name the run folder to "
                          "continue: resume=RUN_DIR (on the SuperLink host)")
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(str(context.run_config.get(keys.RUN_OUTPUT_DIR, "outputs/deploy")))
    new_dir = out.expanduser().resolve() / f"{stamp}-{dcfg.strategy.name}-run{context.run_id}"
    # the SuperNodes keep their own state: only the newest checkpoint matches it (no fallback)
    todo = plan_run(dcfg, new_dir, overrides, check_deployed, fallback=False)
    run_dir = todo.run_dir.resolve()
    if todo.complete:
        log.info("the run in %s is complete; nothing to do", run_dir)
        return run_dir
    log.info("run %s writes to %s", context.run_id, run_dir)
    run_plan(todo, lambda on_round, checkpointing: run_server(
        grid, todo.cfg, on_round, checkpointing=checkpointing, new_message=new_message),
        progress=False)
    return run_dir


def make_server_app(cfg: Config | None = None, on_round: RoundCallback | None = None,
                    checkpointing: Checkpointing | None = None) -> ServerApp:
    """The ServerApp: bound to a composed config, the simulation's (its nodes are executors
    serving cohorts), else composing its config from the run config (deployment)."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        if cfg is None:
            show_info_logs()
            run_deployed(grid, context)
        else:
            run_server(grid, cfg, on_round, ExecutorPool.for_run(cfg), checkpointing)

    return server_app


app = make_server_app()  # for `flwr run` ([tool.flwr.app.components] in pyproject.toml)
