"""The one ServerApp: builds the initial model and the configured method's strategy, and
runs Flower's round loop; every finished round goes to the given callback."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from torch import nn

from flayer.catalog import METHODS
from flayer.config import Config
from flayer.data.federated import source_of
from flayer.layers import LayerMap
from flayer.method import build_model
from flayer.runtime import set_threads
from flayer.strategy import PflStrategy, RoundCallback


def build_strategy(cfg: Config, on_round: RoundCallback | None = None
                   ) -> tuple[PflStrategy, nn.Module]:
    source, _ = source_of(cfg)
    model = build_model(cfg, source.input_shape, source.num_classes)
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


def make_server_app(cfg: Config, on_round: RoundCallback | None = None) -> ServerApp:
    """A ServerApp bound to a composed config (simulation builds it in-process)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, cfg, on_round)

    return app
