"""The server strategy every method subclasses: Flower's round loop plus what pFL needs.

On top of Flower's `Strategy.start` loop it adds: a round 0 that evaluates every client
before training; reproducible sampling by partition id; an explicit model version; reply
checks against the method's upload declaration (a reply that fails counts as a failure and is
skipped); aggregation in partition-id order; and one record per round for the results.

On real machines nodes come and go: the start waits a bounded time for the nodes
(`backend.node_wait`, at least `backend.min_nodes`), each round only addresses nodes that are
connected (a client whose node is gone counts as a failure), and a node that connects mid-run
(a restarted SuperNode gets a new node id) is asked which partition it holds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy
from torch import nn

from flayer import keys
from flayer.aggregation import Contribution, aggregate, weighted_mean
from flayer.config import Config, StrategyConfig
from flayer.layers import LayerMap
from flayer.method import METHODS, shared_params
from flayer.seeding import rng_for
from flayer.upload import ReplyError, TensorSpec, UploadSpec, decode, reply_nbytes

log = logging.getLogger(__name__)


def pause_asked(pause: Path, server_round: int, warn: bool = True) -> bool:
    """Whether the pause file holds the server before this round. An empty file holds it
    before the next round, whenever that is; a file holding a round number r holds it before
    round r (and any later round), so a script can name the point without racing the server.
    Other content holds too (with a warning): holding is the safe reading of a pause file."""
    try:
        text = pause.read_text().strip()
    except FileNotFoundError:
        return False
    except OSError as exc:  # e.g. a directory: it exists, so hold
        if warn:
            log.warning("pause file %s unreadable (%s); holding", pause, exc)
        return True
    if not text:
        return True
    try:
        return server_round >= int(text)
    except ValueError:
        if warn:
            log.warning("pause file %s holds %r, not a round number; holding before round "
                        "%d", pause, text[:40], server_round)
        return True


@dataclass
class ClientEval:
    partition_id: int
    correct: int
    num_test: int
    auc: float
    loss: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.num_test if self.num_test else float("nan")


@dataclass
class RoundRecord:
    """What happened in one round (round 0: the evaluation before any training)."""

    round: int
    model_version: int
    clients: list[ClientEval] = field(default_factory=list)  # empty: no evaluation
    train_loss: float | None = None
    train_metrics: dict[str, float] = field(default_factory=dict)  # the method's extra ones
    trained: int = 0
    upload_bytes: int = 0
    failures: int = 0
    seconds: float = 0.0


RoundCallback = Callable[[RoundRecord], None]


class PflStrategy(Strategy):
    """Base server strategy. Subclasses declare what clients upload and how it aggregates."""

    def __init__(
        self,
        cfg: Config,
        settings: StrategyConfig,
        layers: LayerMap,
        on_round: RoundCallback | None = None,
    ) -> None:
        self.cfg = cfg
        self.settings = settings
        self.layers = layers
        self.on_round = on_round
        self.version = 0
        self.node_of: dict[int, int] = {}  # partition id -> node id, learned in round 0
        self._live: set[int] = set()  # node ids connected at the last refresh
        self._rejected: set[int] = set()  # nodes that failed to say which partition they hold
        self._given_up: set[int] = set()  # lost partitions already waited for once
        self.records: list[RoundRecord] = []
        self._current: RoundRecord | None = None
        self._sampled: list[int] = []
        self._t0 = 0.0

    # ---- what a method declares ----------------------------------------------------------
    def initial_global(self, model: nn.Module) -> dict[str, np.ndarray]:
        """The arrays the server holds and sends, from the run's initial model: every
        parameter by default (a method may hold fewer, or extra modules of its own)."""
        return shared_params(model)

    def prepare_round0(self, grid: Grid, arrays: ArrayRecord, timeout: float) -> ArrayRecord:
        """Extra exchange before round 0's evaluation (its bytes count in round 0)."""
        return arrays

    def upload_spec(self, global_arrays: dict[str, np.ndarray]) -> UploadSpec:
        """What every training reply must hold: by default every global tensor in full."""
        return {name: TensorSpec(tuple(arr.shape)) for name, arr in global_arrays.items()}

    def sync_every_round(self) -> bool:
        """Whether every client must receive each new global model, evaluated or not."""
        return False

    def aggregate_contributions(
        self, contributions: list[Contribution], previous: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        return aggregate(contributions, previous)

    def summary(self) -> None:
        log.debug("%s: %s", type(self).__name__, self.settings)

    # ---- Flower's round loop, with a round 0 first ---------------------------------------
    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None, evaluate_fn=None) -> Result:
        self._wait_for_nodes(grid)
        self._begin(0)
        initial_arrays = self.prepare_round0(grid, initial_arrays, timeout)
        replies = grid.send_and_receive(
            self.configure_evaluate(0, initial_arrays, ConfigRecord(), grid), timeout=timeout
        )
        self.aggregate_evaluate(0, replies)
        return super().start(grid, initial_arrays, num_rounds, timeout, train_config,
                             evaluate_config, evaluate_fn)

    def _wait_for_nodes(self, grid: Grid) -> None:
        """Wait for num_clients nodes, at most backend.node_wait seconds; then start with at
        least backend.min_nodes (null = all), or stop with an error naming the settings."""
        backend = self.cfg.backend
        need = self.cfg.num_clients
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

    def _hold(self, server_round: int) -> None:
        """Hold before a round while backend.pause_file asks for it (to restart nodes safely)."""
        if not self.cfg.backend.pause_file:
            return
        pause = Path(os.path.expanduser(self.cfg.backend.pause_file))
        if pause_asked(pause, server_round):
            log.info("holding before round %d while %s exists", server_round, pause)
            while pause_asked(pause, server_round, warn=False):
                time.sleep(0.5)

    def _refresh_nodes(self, grid: Grid, server_round: int) -> None:
        """Which known clients' nodes are connected; wait once (backend.node_wait) for a lost
        node to come back, and ask nodes that are new which partition they hold."""
        self._live = set(grid.get_node_ids())
        lost = {p for p, n in self.node_of.items() if n not in self._live} - self._given_up
        if lost:
            log.warning("round %d: partitions %s lost their node; waiting up to %.0f s",
                        server_round, sorted(lost), self.cfg.backend.node_wait)
            deadline = time.monotonic() + self.cfg.backend.node_wait
            while len(self._new_nodes()) < len(lost) and time.monotonic() < deadline:
                time.sleep(1.0)
                self._live = set(grid.get_node_ids())
        new = self._new_nodes()
        if new:
            self._identify(grid, sorted(new), server_round)
        still = {p for p, n in self.node_of.items() if n not in self._live}
        if still:
            log.warning("round %d: no node for partitions %s; counted as failures",
                        server_round, sorted(still))
        self._given_up |= still

    def _new_nodes(self) -> set[int]:
        return self._live - set(self.node_of.values()) - self._rejected

    def _identify(self, grid: Grid, nodes: list[int], server_round: int) -> None:
        messages = [
            Message(content=RecordDict({keys.CONFIG: ConfigRecord(
                {keys.SERVER_ROUND: server_round})}), dst_node_id=node,
                message_type=MessageType.QUERY)
            for node in nodes
        ]
        answered: set[int] = set()
        for msg in grid.send_and_receive(messages, timeout=self.cfg.backend.round_timeout):
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
            old = self.node_of.get(pid)
            if old is not None and old in self._live:
                self._rejected.add(node)
                log.warning("round %d: node %d also claims partition %d (held by node %d); "
                            "ignored", server_round, node, pid, old)
                continue
            log.info("round %d: partition %d is now on node %d", server_round, pid, node)
            self.node_of[pid] = node
            self._given_up.discard(pid)
        self._rejected |= set(nodes) - answered

    def _begin(self, server_round: int) -> None:
        self._t0 = time.perf_counter()
        self._current = RoundRecord(round=server_round, model_version=self.version)

    def _message(self, arrays: ArrayRecord, node: int, kind: str, server_round: int,
                 **config: int | float | str | bool) -> Message:
        cfg = ConfigRecord({keys.SERVER_ROUND: server_round, keys.MODEL_VERSION: self.version,
                            **config})
        content = RecordDict({keys.ARRAYS: arrays, keys.CONFIG: cfg})
        return Message(content=content, dst_node_id=node, message_type=kind)

    def sample(self, server_round: int) -> list[int]:
        """Partition ids that train this round: seeded by run seed and round."""
        known = sorted(self.node_of)
        k = max(1, int(self.cfg.num_clients * self.cfg.join_ratio))
        k = min(k, len(known))
        chosen = rng_for(self.cfg.seed, "sample", server_round).choice(known, k, replace=False)
        return sorted(int(p) for p in chosen)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._hold(server_round)
        self._begin(server_round)
        self._refresh_nodes(grid, server_round)
        self._sampled = self.sample(server_round)
        return [  # a sampled client without a node counts as a missing reply
            self._message(arrays, self.node_of[p], MessageType.TRAIN, server_round)
            for p in self._sampled if self.node_of[p] in self._live
        ]

    def collect(self, server_round: int, replies: Iterable[Message], spec: UploadSpec,
                expected: int) -> list[tuple[int, Contribution, MetricRecord]]:
        """The replies that pass every check, in partition-id order. A missing reply, an error
        or a reply that fails the declaration counts as a failure; every received reply's
        arrays count in the round's upload bytes."""
        rec = self._current
        assert rec is not None
        replies = list(replies)
        rec.failures += max(0, expected - len(replies))
        accepted: list[tuple[int, Contribution, MetricRecord]] = []
        for msg in replies:
            if msg.has_error():
                rec.failures += 1
                log.warning("round %d: reply error: %s", server_round, msg.error.reason)
                continue
            rec.upload_bytes += reply_nbytes(msg.content)
            try:
                metrics = msg.content[keys.METRICS]
                weight = float(metrics[keys.NUM_EXAMPLES])
                if not weight > 0:
                    raise ReplyError(f"num-examples {weight}")
                contribution = decode(msg.content, spec, weight)
                accepted.append((int(metrics[keys.PARTITION_ID]), contribution, metrics))
            except (KeyError, ReplyError, TypeError, ValueError) as exc:
                rec.failures += 1
                log.warning("round %d: rejected a reply: %s", server_round, exc)
        return sorted(accepted, key=lambda t: t[0])

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rec = self._current
        assert rec is not None
        previous = self._global
        accepted = []
        for pid, contribution, metrics in self.collect(
            server_round, replies, self.upload_spec(previous), len(self._sampled)
        ):
            loss = float(metrics.get(keys.TRAIN_LOSS, float("nan")))
            if np.isfinite(loss):
                accepted.append((pid, contribution, loss, metrics))
            else:
                rec.failures += 1
                log.warning("round %d: rejected a reply with train loss %s", server_round, loss)
        if not accepted:
            return None, None
        contributions = [c for _, c, _, _ in accepted]
        new = self.aggregate_contributions(contributions, previous)
        self._global = new
        self.version += 1
        rec.trained = len(accepted)
        weights = [c.weight for c in contributions]
        rec.train_loss = weighted_mean([loss for _, _, loss, _ in accepted], weights)
        for name in METHODS.get(self.settings.name).client.train_metrics:
            values = [float(m.get(name, float("nan"))) for *_, m in accepted]
            rec.train_metrics[name] = weighted_mean(values, weights)
        return to_record(new), MetricRecord(
            {"train-loss": rec.train_loss, "trained": rec.trained}
        )

    def is_eval_round(self, server_round: int) -> bool:
        return (
            server_round == 0
            or server_round % self.cfg.eval_every == 0
            or server_round == self.cfg.num_rounds
        )

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        evaluate = self.is_eval_round(server_round)
        if not (evaluate or self.sync_every_round()):
            return []
        if server_round == 0:
            nodes = list(grid.get_node_ids())
        else:
            self._refresh_nodes(grid, server_round)
            nodes = [n for n in self.node_of.values() if n in self._live]
        return [
            self._message(arrays, node, MessageType.EVALUATE, server_round,
                          **{keys.DO_EVALUATE: evaluate})
            for node in sorted(nodes)
        ]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        rec = self._current
        assert rec is not None
        replies = list(replies)
        expected = (len(self.node_of) if server_round else self.cfg.num_clients) if (
            self.is_eval_round(server_round) or self.sync_every_round()) else 0
        rec.failures += max(0, expected - len(replies))
        for msg in replies:
            if msg.has_error():
                rec.failures += 1
                log.warning("round %d: evaluate reply error: %s", server_round, msg.error.reason)
                continue
            try:
                m = msg.content[keys.METRICS]
                pid = int(m[keys.PARTITION_ID])
                if server_round == 0:
                    node = msg.metadata.src_node_id
                    if self.node_of.get(pid, node) != node:
                        self._rejected.add(node)
                        raise ValueError(f"node {node} also claims partition {pid} (held by "
                                         f"node {self.node_of[pid]}); ignored")
                    self.node_of[pid] = node
                if int(m[keys.EVALUATED]):
                    rec.clients.append(_client_eval(pid, m))
            except (KeyError, TypeError, ValueError) as exc:
                rec.failures += 1
                log.warning("round %d: rejected an evaluate reply: %s", server_round, exc)
        rec.clients.sort(key=lambda c: c.partition_id)
        rec.seconds = time.perf_counter() - self._t0
        rec.model_version = self.version
        self.records.append(rec)
        if self.on_round is not None:
            self.on_round(rec)
        if not rec.clients:
            return None
        correct = sum(c.correct for c in rec.clients)
        total = sum(c.num_test for c in rec.clients)
        return MetricRecord({"accuracy": correct / total if total else 0.0})

    # the server's copy of the global arrays (numpy), set by the ServerApp before start()
    _global: dict[str, np.ndarray]

    def set_initial(self, model: nn.Module) -> ArrayRecord:
        self._global = self.initial_global(model)
        return to_record(self._global)


_CORE = {keys.PARTITION_ID, keys.CORRECT, keys.NUM_TEST, keys.AUC, keys.TEST_LOSS,
         keys.EVALUATED, keys.ACCURACY}


def _client_eval(pid: int, m: MetricRecord) -> ClientEval:
    num = int(m[keys.NUM_TEST])
    correct = int(m[keys.CORRECT])
    if num <= 0 or not 0 <= correct <= num:
        raise ValueError(f"client {pid}: {correct} correct of {num}")
    return ClientEval(
        partition_id=pid, correct=correct, num_test=num, auc=float(m[keys.AUC]),
        loss=float(m[keys.TEST_LOSS]),
        extra={k: float(v) for k, v in m.items() if k not in _CORE},
    )


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})
