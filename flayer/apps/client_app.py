"""The one ClientApp, method-agnostic, in its two roles: a SuperNode's client
(`flayer.apps.node_client`, one client per node, under `flwr run`) or a simulated executor
(`flayer.apps.executor`, serving cohorts of clients from the run's state store).

Either way a reply holds one record per client (`keys.client_record`), or a failure record
(`keys.failed_record`) for a client whose work failed, or one `keys.RUN_ERROR` record when
the run cannot go on (`flayer.protocol.replies`).
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from flayer.apps.executor import Executor
from flayer.apps.node_client import NodeClient
from flayer.apps.runtime import show_info_logs
from flayer.config.compose import config_from_overrides, deployed_overrides
from flayer.config.schema import Config
from flayer.protocol import keys
from flayer.state.store import ClientStore


def config_of(context: Context) -> Config:
    """Under `flwr run` the run config carries the Hydra overrides as one string."""
    overrides = str(context.run_config.get(keys.RUN_OVERRIDES, ""))
    return config_from_overrides(deployed_overrides(overrides))


def make_client_app(cfg: Config | None = None, store: Path | None = None) -> ClientApp:
    """The ClientApp: a simulated executor when given the run's config and state store, else
    a SuperNode's client (bound to a composed config, or composing its config from each
    run's run config under `flwr run`)."""
    client_app = ClientApp()

    def serving(context: Context) -> NodeClient | Executor:
        if cfg is not None and store is not None:
            return Executor(cfg, ClientStore(store))
        if cfg is not None:
            return NodeClient(cfg, context)
        show_info_logs()  # a ClientApp process of a SuperNode: its log shows flayer's
        return NodeClient(config_of(context), context)

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        return serving(context).train(msg)

    @client_app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return serving(context).evaluate(msg)

    @client_app.query()
    def query(msg: Message, context: Context) -> Message:
        server = serving(context)
        if not isinstance(server, NodeClient):
            raise ValueError("a simulated executor serves any client; it is never queried")
        return server.query(msg)

    return client_app


app = make_client_app()  # for `flwr run` ([tool.flwr.app.components] in pyproject.toml)
