"""The one ServerApp: builds the initial model and the configured method's strategy, and
runs Flower's round loop; every finished round goes to the given callback."""

from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from omegaconf import OmegaConf
from torch import nn

from flayer import keys
from flayer.catalog import METHODS
from flayer.compose import compose_dict, config_from_overrides
from flayer.config import Config
from flayer.data.federated import dataset
from flayer.experiment import prepare, run_info
from flayer.layers import LayerMap
from flayer.method import build_model
from flayer.results.recorder import RunRecorder
from flayer.runtime import set_threads
from flayer.strategy import PflStrategy, RoundCallback

log = logging.getLogger(__name__)


def build_strategy(cfg: Config, on_round: RoundCallback | None = None
                   ) -> tuple[PflStrategy, nn.Module]:
    model = build_model(cfg, dataset(cfg).spec)
    method = METHODS.get(cfg.strategy.name)
    return method.strategy(cfg, cfg.strategy, LayerMap(model), on_round), model


def run_server(grid: Grid, cfg: Config, on_round: RoundCallback | None = None) -> PflStrategy:
    set_threads(int(cfg.backend.client_cpus))
    strategy, model = build_strategy(cfg, on_round)
    strategy.start(
        grid=grid,
        initial_arrays=strategy.set_initial(model),
        num_rounds=cfg.num_rounds,
        timeout=cfg.backend.round_timeout,
    )
    return strategy


def run_deployed(grid: Grid, context: Context) -> Path:
    """Under `flwr run`: compose the config from the run config, check it, and write a run
    directory under the run config's output directory (on the host running the ServerApp)."""
    overrides = str(context.run_config.get(keys.RUN_OVERRIDES, ""))
    dcfg = compose_dict(shlex.split(overrides))
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(str(context.run_config.get(keys.RUN_OUTPUT_DIR, "outputs/deploy"))).expanduser()
    cfg = config_from_overrides(overrides)
    run_dir = out / f"{stamp}-{cfg.strategy.name}-run{context.run_id}"
    prepare(dcfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(dcfg, resolve=True))
    recorder = RunRecorder(run_dir, run_info(cfg), cfg.num_rounds, progress=False)
    try:
        run_server(grid, cfg, recorder)
    finally:
        recorder.finish()
    log.info("results in %s", run_dir)
    return run_dir


def make_server_app(cfg: Config | None = None, on_round: RoundCallback | None = None
                    ) -> ServerApp:
    """The ServerApp, bound to a composed config (simulation) or composing its config from
    the run config (deployment)."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        if cfg is None:
            run_deployed(grid, context)
        else:
            run_server(grid, cfg, on_round)

    return server_app


app = make_server_app()  # for `flwr run` ([tool.flwr.app.components] in pyproject.toml)
