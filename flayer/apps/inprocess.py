"""The apps in one process, without Ray or a SuperLink: a Grid whose nodes are plain
`Context`s and whose messages go straight to the ClientApp's serving code, one after another.

Two layouts, those of the two real ones: with a state store the nodes are executors serving
cohorts, as in a simulation; without one, one node per client keeping its state in its memory,
as SuperNodes do. The server side is the real one (`run_server`: the strategy, the routing, the
round loop), and so is the client side, so a run here gives the numbers of a run with the same
config. It serves what needs the whole protocol without processes: the overhead benchmark's
baseline, stepping through a round in a debugger, and fast tests of every method.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from flayer.apps.executor import Executor
from flayer.apps.node_client import NodeClient
from flayer.apps.server_app import run_server
from flayer.config.schema import Config
from flayer.protocol import keys
from flayer.protocol.cohorts import ExecutorPool
from flayer.protocol.instructions import stamped
from flayer.protocol.rounds import RoundCallback, RoundLoop
from flayer.run.stops import raise_if_asked
from flayer.state.checkpoint import Checkpointing
from flayer.state.store import ClientStore

FIRST_NODE = 1000  # node k serves partition k (or is executor k): node id FIRST_NODE + k
RUN_ID = 1
SERVER_NODE = 0


# new instructions, stamped as Flower's ServerApp runtime would stamp them
new_message = stamped(RUN_ID, SERVER_NODE)


class InProcessGrid(Grid):
    """With `store`: `executors` executor nodes sharing that client state store. Without:
    one node per client, each with its own Context (its personal state lives there, as in a
    SuperNode's memory); `node_config` is added to every such node's config."""

    def __init__(self, cfg: Config, node_config: dict[str, Any] | None = None, *,
                 store: Path | None = None, executors: int = 2) -> None:
        self.cfg = cfg
        self.node_config = dict(node_config or {})
        self.store = None if store is None else ClientStore(store)
        count = min(executors, cfg.num_clients) if store is not None else cfg.num_clients
        self.contexts: dict[int, Context] = {
            FIRST_NODE + k: self.new_context(FIRST_NODE + k, k) for k in range(count)
        }

    def new_context(self, node: int, partition_id: int) -> Context:
        config = {keys.NODE_PARTITION_ID: partition_id,
                  keys.NODE_NUM_PARTITIONS: self.cfg.num_clients, **self.node_config}
        return Context(run_id=RUN_ID, node_id=node, node_config=config, state=RecordDict(),
                       run_config={})

    # ---- what the strategy uses -----------------------------------------------------------
    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        raise_if_asked()  # each exchange is a safe point of the main thread, as the wait is
        replies = []
        for msg in messages:
            reply = self.deliver(msg)
            if reply is not None:
                replies.append(reply)
        return replies

    def deliver(self, msg: Message) -> Message | None:
        """The reply of the message's node; None where no node answers."""
        context = self.contexts.get(msg.metadata.dst_node_id)
        if context is None:
            return None
        server = (Executor(self.cfg, self.store) if self.store is not None
                  else NodeClient(self.cfg, context))
        kind = msg.metadata.message_type
        if kind == MessageType.TRAIN:
            return server.train(msg)
        if kind == MessageType.EVALUATE:
            return server.evaluate(msg)
        if kind == MessageType.QUERY and isinstance(server, NodeClient):
            return server.query(msg)
        raise ValueError(f"no handler for a {kind} message")

    # ---- the rest of Flower's Grid: not needed in one process ----------------------------
    @property
    def run(self):  # noqa: ANN201
        raise NotImplementedError("an in-process grid has no Flower run")

    def set_run(self, run_id: int) -> None:
        raise NotImplementedError("an in-process grid has no Flower run")

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError("build messages with flwr.app.Message")

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("use send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("use send_and_receive")


def run_in_process(cfg: Config, on_round: RoundCallback | None = None,
                   grid: InProcessGrid | None = None, store: Path | None = None,
                   checkpointing: Checkpointing | None = None) -> RoundLoop:
    """A whole run in this process (no Ray); every finished round goes to on_round. Give a
    grid, or a store folder for the simulation's layout (executors over that store)."""
    if grid is None:
        if store is None:
            raise ValueError("run_in_process needs a grid or a state store folder")
        grid = InProcessGrid(cfg, store=store)
    routing = ExecutorPool.for_run(cfg) if grid.store is not None else None
    return run_server(grid, cfg, on_round, routing, checkpointing, new_message)


def engine(cfg: Config, on_round: RoundCallback, store: Path,
           checkpointing: Checkpointing | None = None) -> None:
    """`flayer.run.experiment.run`'s engine in this process: the simulation's layout, without
    Ray (a whole run, checkpoints and resume included, in a debugger or a fast test)."""
    run_in_process(cfg, on_round, store=store, checkpointing=checkpointing)
