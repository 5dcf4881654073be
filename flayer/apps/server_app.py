"""The one ServerApp: builds the initial model and the configured method's strategy, and
runs Flower's round loop; every finished round goes to the given callback.

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
from omegaconf import DictConfig
from torch import nn

from flayer.apps.runtime import set_threads, show_info_logs
from flayer.config.compose import compose_dict, deployed_overrides
from flayer.config.schema import Config, to_config
from flayer.config.validation import validate
from flayer.data.federated import dataset
from flayer.data.node import static_spec
from flayer.data.source import DataSpec
from flayer.nn.layers import LayerMap
from flayer.protocol import keys
from flayer.protocol.catalog import METHODS
from flayer.protocol.cohorts import ExecutorPool
from flayer.protocol.method import build_model
from flayer.protocol.roster import Routing
from flayer.protocol.rounds import PflStrategy, RoundCallback
from flayer.results.record import RoundRecord
from flayer.run.folder import check_free, open_continuation, record_run
from flayer.state.checkpoint import Checkpointing, Checkpoints
from flayer.util.errors import ConfigError, require

log = logging.getLogger(__name__)


def model_spec(cfg: Config) -> DataSpec:
    """The model's input spec: from the dataset itself where it is fixed, else from the data
    (a vocabulary learnt from the training samples needs the data on this host)."""
    return static_spec(cfg) or dataset(cfg).spec


def build_strategy(cfg: Config, routing: Routing | None = None
                   ) -> tuple[PflStrategy, nn.Module]:
    """The run's initial model and the configured method's strategy, holding that model."""
    model = build_model(cfg, model_spec(cfg))
    strategy = METHODS.get(cfg.strategy.name).build_strategy(cfg, LayerMap(model), routing)
    strategy.set_initial(model)
    return strategy, model


def run_server(grid: Grid, cfg: Config, on_round: RoundCallback | None = None,
               routing: Routing | None = None, checkpointing: Checkpointing | None = None
               ) -> PflStrategy:
    """The round loop on this grid: a node per client, unless `routing` says otherwise (the
    simulation's executor pool); with `checkpointing`, continuing from its server state and
    writing a checkpoint after each round it asks for (once the round's rows are written)."""
    set_threads(int(cfg.backend.client_cpus))
    strategy, _ = build_strategy(cfg, routing)
    start = 0
    if checkpointing is not None:
        strategy.run_instructions[keys.RUN_KEY] = checkpointing.run_key
        strategy.run_instructions[keys.CHECKPOINT_ROUND] = checkpointing.last_round
        if checkpointing.resume_from is not None:
            strategy.restore(checkpointing.resume_from)
            start = checkpointing.start_round()

    def finished(rec: RoundRecord) -> None:
        if on_round is not None:
            on_round(rec)
        if checkpointing is not None:
            checkpointing.save(strategy.server_state(rec.round))
            strategy.run_instructions[keys.CHECKPOINT_ROUND] = checkpointing.last_round

    strategy.run(grid, finished, start)
    return strategy


def check_deployed(dcfg: DictConfig, run_dir: Path) -> Config:
    """Everything that can fail on bad input before a deployed run starts. Without the data
    on this host the data checks are left to the nodes; the rest is checked here."""
    cfg = to_config(dcfg)
    b = cfg.backend
    require(b.min_nodes is None or 1 <= b.min_nodes <= cfg.num_clients, "backend.min_nodes",
            b.min_nodes, f"must be in 1..num_clients ({cfg.num_clients}) or null for all")
    require(b.node_wait >= 0, "backend.node_wait", b.node_wait, "must be >= 0 seconds")
    check_free(run_dir)
    try:
        validate(cfg)
        return cfg
    except ConfigError as exc:
        if exc.setting != "dataset.path":
            raise
        log.warning("no %s data on this host (%s); the SuperNodes check their own",
                    cfg.dataset.name, exc)
    model = build_model(cfg, model_spec(cfg))
    METHODS.get(cfg.strategy.name).config.check(cfg.strategy, cfg, LayerMap(model))
    return cfg


def run_deployed(grid: Grid, context: Context) -> Path:
    """Under `flwr run`: compose the config from the run config, check it, and write a run
    directory under the run config's output directory (on the host running the ServerApp);
    with `resume=RUN_DIR` in the overrides, continue that run folder from its checkpoint
    (its SuperNodes find their state by the folder's key)."""
    overrides = shlex.split(deployed_overrides(str(context.run_config.get(keys.RUN_OVERRIDES,
                                                                           ""))))
    dcfg = compose_dict(overrides)
    going_on = None
    if dcfg.resume is not None:
        if dcfg.resume == "auto":
            raise ConfigError("resume", "auto", "under flwr run, name the run folder to "
                              "continue: resume=RUN_DIR (on the SuperLink host)")
        run_dir = Path(str(dcfg.resume)).expanduser().resolve()
        # the SuperNodes keep their own state: only the newest checkpoint matches it
        going_on = open_continuation(run_dir, str(dcfg.resume), overrides, compose_dict,
                                     fallback=False)
        assert going_on is not None
        if going_on.complete:
            log.info("the run in %s is complete; nothing to do", run_dir)
            return run_dir
        dcfg, overrides = going_on.dcfg, going_on.overrides
        cfg = to_config(dcfg)
    else:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        out = Path(str(context.run_config.get(keys.RUN_OUTPUT_DIR, "outputs/deploy")))
        out = out.expanduser().resolve()
        run_dir = out / f"{stamp}-{dcfg.strategy.name}-run{context.run_id}"
        cfg = check_deployed(dcfg, run_dir)
    resume_from = None
    if going_on is not None and going_on.checkpoint is not None:
        resume_from = Checkpoints.load(going_on.checkpoint)
    checkpointing = Checkpointing(Checkpoints(run_dir, cfg.checkpoint_keep), cfg.checkpoint_every,
                                  cfg.num_rounds, None, resume_from)
    log.info("run %s writes to %s", context.run_id, run_dir)
    record_run(run_dir, dcfg, cfg,
               lambda on_round: run_server(grid, cfg, on_round, checkpointing=checkpointing),
               progress=False, overrides=overrides,
               resume_round=None if going_on is None else checkpointing.start_round() - 1)
    log.info("results in %s", run_dir)
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
