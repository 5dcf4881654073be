"""Which simulated executor serves which clients.

In simulation a few executor nodes serve every client: each message names its cohort. The
cohorts of one message are balanced by sample count (the largest clients first, each to the
executor with the least work so far), so that one executor does not hold up the round; each
cohort is served in partition-id order. The split depends only on the clients and their sizes,
so the same round gets the same cohorts in every run.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

import numpy as np
from flwr.app import MessageType
from flwr.serverapp import Grid

from flayer.config.schema import Config
from flayer.data.federated import client_sizes

# A client's fixed cost in sample units (restoring its state, setting up the model), so that
# many tiny clients are spread as evenly as a few big ones.
CLIENT_OVERHEAD = 8.0


def balanced(costs: Sequence[float], bins: int) -> list[list[int]]:
    """Indices into `costs` in at most `bins` groups of near-equal total cost (longest
    processing time first); each group sorted, empty groups dropped."""
    groups: list[list[int]] = [[] for _ in range(bins)]
    heap = [(0.0, b) for b in range(bins)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, b = heapq.heappop(heap)
        groups[b].append(i)
        heapq.heappush(heap, (load + costs[i], b))
    return [sorted(g) for g in groups if g]


class ExecutorPool:
    """Partition ids -> cohorts on the simulation's executor nodes (the roster's role in
    simulation: every client is there from the start, on whichever executor is free)."""

    def __init__(self, sizes: np.ndarray) -> None:
        self.sizes = np.asarray(sizes, dtype=np.float64)  # per client: (train, test) samples
        self.nodes: list[int] = []

    @classmethod
    def for_run(cls, cfg: Config) -> ExecutorPool:
        return cls(client_sizes(cfg))

    @property
    def partitions(self) -> list[int]:
        return list(range(len(self.sizes)))

    def wait_for_nodes(self, grid: Grid) -> None:
        self.nodes = sorted(grid.get_node_ids())
        if not self.nodes:
            raise RuntimeError("the simulation started no executor nodes")

    def refresh(self, grid: Grid, server_round: int) -> None:
        self.nodes = sorted(grid.get_node_ids())

    def route(self, partition_ids: Iterable[int], kind: str) -> dict[int, list[int]]:
        """Executor node -> the cohort it serves for a message of this kind."""
        pids = sorted(int(p) for p in partition_ids)
        if not pids or not self.nodes:
            return {}
        train, test = self.sizes[pids, 0], self.sizes[pids, 1]
        cost = train if kind == MessageType.TRAIN else train + test
        groups = balanced(list(cost + CLIENT_OVERHEAD), len(self.nodes))
        # fewer cohorts than executors when there are fewer clients: the first ones serve
        return {node: [pids[i] for i in group]
                for node, group in zip(self.nodes, groups, strict=False)}


def default_executors(cfg: Config, cpus: float, gpus: float, gpu_share: float) -> int:
    """How many executors: `backend.executors`, else as many as Ray runs at once (CPUs over
    backend.client_cpus, and GPUs over the clients' GPU share where they take one), at most
    one per client."""
    if cfg.backend.executors is not None:
        return min(cfg.backend.executors, cfg.num_clients)
    actors = max(1, int(cpus // cfg.backend.client_cpus))
    if gpu_share > 0:
        actors = min(actors, max(1, int(gpus // gpu_share)))
    return max(1, min(actors, cfg.num_clients))
