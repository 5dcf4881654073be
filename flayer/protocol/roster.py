"""Which node serves which client (partition id), and how nodes come and go.

In simulation every node is there from the start and stays. On real machines the start waits a
bounded time for the nodes (`backend.node_wait`, at least `backend.min_nodes`), a node that
went away is waited for once, and a node that connects mid-run (a restarted SuperNode gets a
new node id) is asked which partition it holds. Node ids are Flower's and random; everything
else in flayer speaks of partition ids.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Protocol

from flwr.app import ConfigRecord, MessageType, RecordDict
from flwr.serverapp import Grid

from flayer.config.schema import BackendConfig
from flayer.protocol import keys
from flayer.protocol.instructions import NewMessage, flower_message

log = logging.getLogger(__name__)


class Routing(Protocol):
    """What the round loop needs to know about nodes: the clients there are and which node
    serves which (the roster on real machines, the executor pool in simulation)."""

    @property
    def partitions(self) -> list[int]: ...

    def wait_for_nodes(self, grid: Grid) -> None: ...

    def refresh(self, grid: Grid, server_round: int) -> None: ...

    def route(self, partition_ids: Iterable[int], kind: str) -> dict[int, list[int]]: ...


class Roster:
    """Partition id -> node id, learnt by asking each new node which partition it holds."""

    def __init__(self, num_clients: int, backend: BackendConfig,
                 new_message: NewMessage = flower_message) -> None:
        self.num_clients = num_clients
        self.backend = backend
        self.new_message = new_message
        self._node_of: dict[int, int] = {}
        self._live: set[int] = set()  # node ids connected at the last refresh
        self._rejected: set[int] = set()  # nodes that failed to say which partition they hold
        self._given_up: set[int] = set()  # lost partitions already waited for once

    # ---- what the round loop asks -------------------------------------------------------
    @property
    def partitions(self) -> list[int]:
        """Every partition a node has claimed so far (connected now or not)."""
        return sorted(self._node_of)

    def node(self, partition_id: int) -> int | None:
        """The node serving this partition now; None while it has no connected node."""
        node = self._node_of.get(partition_id)
        return node if node in self._live else None

    def served(self, partition_ids: Iterable[int]) -> dict[int, int]:
        """Partition -> node for those of the given partitions that have a connected node."""
        nodes = {p: self.node(p) for p in partition_ids}
        return {p: n for p, n in nodes.items() if n is not None}

    def route(self, partition_ids: Iterable[int], kind: str) -> dict[int, list[int]]:
        """Node -> the one client it serves, for the given clients that have a node now."""
        return {node: [pid] for pid, node in sorted(self.served(partition_ids).items())}

    def claim(self, partition_id: int, node: int) -> bool:
        """Record that `node` holds `partition_id`, unless another connected node holds it."""
        old = self._node_of.get(partition_id)
        if old is not None and old != node and old in self._live:
            self._rejected.add(node)
            log.warning("node %d also claims partition %d (held by node %d); ignored", node,
                        partition_id, old)
            return False
        self._node_of[partition_id] = node
        self._live.add(node)
        self._given_up.discard(partition_id)
        return True

    # ---- keeping it current ---------------------------------------------------------------
    def wait_for_nodes(self, grid: Grid) -> None:
        """Wait for num_clients nodes, at most backend.node_wait seconds; then start with at
        least backend.min_nodes (null = all), or stop with an error naming the settings."""
        backend, need = self.backend, self.num_clients
        least = need if backend.min_nodes is None else min(backend.min_nodes, need)
        deadline = time.monotonic() + backend.node_wait
        last = -1
        while True:
            connected = len(list(grid.get_node_ids()))
            if connected >= need:
                return
            if time.monotonic() >= deadline:
                if connected >= least:
                    log.warning("starting with %d of %d nodes after %.0f s (backend.min_nodes="
                                "%s)", connected, need, backend.node_wait, backend.min_nodes)
                    return
                raise RuntimeError(
                    f"only {connected} of the {least} nodes needed (backend.min_nodes="
                    f"{backend.min_nodes}, num_clients={need}) connected within "
                    f"backend.node_wait={backend.node_wait} s"
                )
            if connected != last:
                log.info("waiting for %d nodes (%d connected)", need, connected)
                last = connected
            time.sleep(1.0)

    def refresh(self, grid: Grid, server_round: int) -> None:
        """Which nodes are connected; wait once (backend.node_wait) for a lost node to come
        back, and ask nodes that are new which partition they hold (all of them in round 0)."""
        self._live = set(grid.get_node_ids())
        lost = {p for p, n in self._node_of.items() if n not in self._live} - self._given_up
        if lost:
            log.warning("round %d: partitions %s lost their node; waiting up to %.0f s",
                        server_round, sorted(lost), self.backend.node_wait)
            deadline = time.monotonic() + self.backend.node_wait
            while len(self._new_nodes()) < len(lost) and time.monotonic() < deadline:
                time.sleep(1.0)
                self._live = set(grid.get_node_ids())
        new = self._new_nodes()
        if new:
            self._identify(grid, sorted(new), server_round)
        still = {p for p, n in self._node_of.items() if n not in self._live}
        if still:
            log.warning("round %d: no node for partitions %s; counted as failures",
                        server_round, sorted(still))
        self._given_up |= still

    def _new_nodes(self) -> set[int]:
        return self._live - set(self._node_of.values()) - self._rejected

    def _identify(self, grid: Grid, nodes: list[int], server_round: int) -> None:
        messages = [
            self.new_message(RecordDict({keys.CONFIG: ConfigRecord(
                {keys.SERVER_ROUND: server_round})}), node, MessageType.QUERY)
            for node in nodes
        ]
        answered: set[int] = set()
        replies = grid.send_and_receive(messages, timeout=self.backend.round_timeout)
        for msg in sorted(replies, key=lambda m: m.metadata.src_node_id):
            node = msg.metadata.src_node_id
            answered.add(node)
            if msg.has_error():
                self._rejected.add(node)
                log.warning("round %d: node %d could not join: %s", server_round, node,
                            msg.error.reason)
                continue
            try:
                pid = int(msg.content[keys.METRICS][keys.PARTITION_ID])
            except (KeyError, TypeError, ValueError) as exc:
                self._rejected.add(node)
                log.warning("round %d: node %d sent no partition id: %s", server_round, node,
                            exc)
                continue
            if self.claim(pid, node) and server_round > 0:
                log.info("round %d: partition %d is now on node %d", server_round, pid, node)
        self._rejected |= set(nodes) - answered
