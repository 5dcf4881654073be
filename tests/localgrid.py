"""The package's in-process grid with faults a test can inject: nodes that go away from a
round on, and nodes that restart (a new node id, empty memory)."""

from __future__ import annotations

import numpy as np
from flwr.app import Message, MessageType

from flayer.apps.inprocess import FIRST_NODE, InProcessGrid, run_in_process
from flayer.config.schema import Config
from flayer.protocol import keys
from flayer.protocol.rounds import RoundLoop
from flayer.results.record import RoundRecord


class LocalGrid(InProcessGrid):
    def __init__(self, cfg: Config, down: dict[int, int] | None = None,
                 node_config: dict | None = None) -> None:
        super().__init__(cfg, node_config)
        self.down = down or {}  # partition id -> first server round its node is gone
        self.queried: list[tuple[int, int]] = []  # (round, node) asked which partition

    def restart(self, partition_id: int) -> int:
        """The partition's node comes back as a new node (new id, empty memory)."""
        old = next(n for n, c in self.contexts.items()
                   if c.node_config[keys.NODE_PARTITION_ID] == partition_id)
        del self.contexts[old]
        node = max(self.contexts, default=FIRST_NODE) + 100
        self.contexts[node] = self.new_context(node, partition_id)
        return node

    def deliver(self, msg: Message) -> Message | None:
        node = msg.metadata.dst_node_id
        server_round = int(msg.content[keys.CONFIG][keys.SERVER_ROUND])
        gone_from = self.down.get(node - FIRST_NODE)
        if gone_from is not None and server_round >= gone_from:
            return None  # no reply, as from a node that went away
        if msg.metadata.message_type == MessageType.QUERY:
            self.queried.append((server_round, node))
        return super().deliver(msg)


class RecordingGrid(LocalGrid):
    """Keeps every exchange: (message, reply, the node's stored arrays after it)."""

    def __init__(self, cfg: Config, **kwargs) -> None:
        super().__init__(cfg, **kwargs)
        self.log: list[tuple[Message, Message | None, dict[str, np.ndarray]]] = []

    def deliver(self, msg: Message) -> Message | None:
        reply = super().deliver(msg)
        context = self.contexts.get(msg.metadata.dst_node_id)
        stored = {} if context is None or keys.STATE_ARRAYS not in context.state else {
            k: v.numpy().copy() for k, v in context.state[keys.STATE_ARRAYS].items()}
        self.log.append((msg, reply, stored))
        return reply


def run_local(cfg: Config, down: dict[int, int] | None = None, grid: LocalGrid | None = None,
              on_round=None) -> tuple[RoundLoop, list[RoundRecord], LocalGrid]:
    """Run a whole experiment in this process; returns the strategy and every round.
    `on_round(record, grid)` runs after each round (e.g. to restart a node)."""
    records: list[RoundRecord] = []
    grid = grid or LocalGrid(cfg, down)

    def record(rec: RoundRecord) -> None:
        records.append(rec)
        if on_round is not None:
            on_round(rec, grid)

    strategy = run_in_process(cfg, record, grid)
    return strategy, records, grid


def run_executors(cfg: Config, store, executors: int = 2, on_round=None
                  ) -> tuple[RoundLoop, list[RoundRecord], InProcessGrid]:
    """A whole experiment in the simulation's layout: `executors` nodes serving cohorts, the
    clients' state in the store folder."""
    grid = InProcessGrid(cfg, store=store, executors=executors)
    records: list[RoundRecord] = []

    def record(rec: RoundRecord) -> None:
        records.append(rec)
        if on_round is not None:
            on_round(rec, grid)

    return run_in_process(cfg, record, grid), records, grid
