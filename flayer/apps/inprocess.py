"""The apps in one process, without Ray or a SuperLink: a Grid whose nodes are plain
`Context`s and whose messages go straight to the ClientApp's handlers, one after another.

The server side is the real one (`run_server`: the strategy, the roster, the round loop), and
so is the client side (the same handlers the ClientApp runs), so a run here gives the numbers
of a simulation with the same config. It serves what needs the whole protocol without
processes: the overhead benchmark's baseline, stepping through a round in a debugger, and
fast tests of every method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from flayer import keys
from flayer.apps.client_app import handle_evaluate, handle_query, handle_train
from flayer.apps.server_app import run_server
from flayer.config import Config
from flayer.strategy import PflStrategy, RoundCallback

FIRST_NODE = 1000  # node k serves partition k: node id FIRST_NODE + k
RUN_ID = 1
SERVER_NODE = 0

Handler = Callable[[Message, Context, Config], Message]
HANDLERS: dict[str, Handler] = {
    MessageType.TRAIN: handle_train,
    MessageType.EVALUATE: handle_evaluate,
    MessageType.QUERY: handle_query,
}


def act_as_server(run_id: int = RUN_ID) -> None:
    """Stand in for the ServerApp's runtime: Flower stamps new messages with the task identity
    that its runner sets (`flwr.superlink.runtime.run_serverapp`); here this process is it."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SERVER_NODE, 1


class InProcessGrid(Grid):
    """One node per client, each with its own Context (its personal state lives there, as
    in a SuperNode's memory); `node_config` is added to every node's config."""

    def __init__(self, cfg: Config, node_config: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.node_config = dict(node_config or {})
        self.contexts: dict[int, Context] = {
            FIRST_NODE + k: self.new_context(FIRST_NODE + k, k) for k in range(cfg.num_clients)
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
        return HANDLERS[msg.metadata.message_type](msg, context, self.cfg)

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
                   grid: InProcessGrid | None = None) -> PflStrategy:
    """A whole run in this process (no Ray); every finished round goes to on_round."""
    act_as_server()
    return run_server(grid or InProcessGrid(cfg), cfg, on_round)
