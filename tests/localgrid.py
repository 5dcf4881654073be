"""An in-process Grid: the real ServerApp logic and the real ClientApp handlers, with one
Context per node and no Ray, so whole methods can be tested in seconds."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from flayer.apps.client_app import handle_evaluate, handle_query, handle_train
from flayer.apps.server_app import run_server
from flayer.config import Config
from flayer.strategy import PflStrategy, RoundRecord

FIRST_NODE = 1000


class LocalGrid(Grid):
    def __init__(self, cfg: Config, down: dict[int, int] | None = None,
                 node_config: dict | None = None) -> None:
        self.cfg = cfg
        self.down = down or {}  # partition id -> first server round its node is gone
        self.node_config = node_config or {}  # extra node config of every node
        self.contexts = {FIRST_NODE + k: self._context(FIRST_NODE + k, k)
                         for k in range(cfg.num_clients)}
        self.queried: list[int] = []  # nodes asked which partition they hold

    def _context(self, node: int, partition_id: int) -> Context:
        config = {"partition-id": partition_id, "num-partitions": self.cfg.num_clients,
                  **self.node_config}
        return Context(run_id=1, node_id=node, node_config=config, state=RecordDict(),
                       run_config={})

    def restart(self, partition_id: int) -> int:
        """The partition's node comes back as a new node (new id, empty memory)."""
        old = next(n for n, c in self.contexts.items()
                   if c.node_config["partition-id"] == partition_id)
        del self.contexts[old]
        node = max(self.contexts, default=FIRST_NODE) + 100
        self.contexts[node] = self._context(node, partition_id)
        return node

    def set_run(self, run_id: int) -> None:  # pragma: no cover - unused
        pass

    @property
    def run(self):  # pragma: no cover - unused
        raise NotImplementedError

    def create_message(self, *args, **kwargs):  # pragma: no cover - unused
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages):  # pragma: no cover - unused
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover - unused
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout=None) -> list[Message]:
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            gone_from = self.down.get(node - FIRST_NODE)
            if gone_from is not None and msg.content["config"]["server-round"] >= gone_from:
                continue  # no reply, as from a node that went away
            context = self.contexts.get(node)
            if context is None:
                continue  # a node that is gone sends nothing
            kind = msg.metadata.message_type
            if kind == MessageType.QUERY:
                self.queried.append(node)
            handler = {MessageType.TRAIN: handle_train, MessageType.EVALUATE: handle_evaluate,
                       MessageType.QUERY: handle_query}[kind]
            replies.append(handler(msg, context, self.cfg))
        return replies


def run_local(cfg: Config, down: dict[int, int] | None = None, grid: LocalGrid | None = None,
              on_round=None) -> tuple[PflStrategy, list[RoundRecord], LocalGrid]:
    """Run a whole experiment in this process; returns the strategy and every round.
    `on_round(record, grid)` runs after each round (e.g. to restart a node)."""
    for attr in ("_run_id", "_node_id", "_task_id"):
        setattr(TaskIdentity, attr, 1)
    records: list[RoundRecord] = []
    grid = grid or LocalGrid(cfg, down)

    def record(rec: RoundRecord) -> None:
        records.append(rec)
        if on_round is not None:
            on_round(rec, grid)

    strategy = run_server(grid, cfg, record)
    return strategy, records, grid
