"""The server strategy every method subclasses, and the one round loop.

Round 0 evaluates every client before any training; each later round samples clients
(seeded by partition id), checks every training reply against the method's upload
declaration (a reply that fails counts as a failure and is skipped), aggregates in
partition-id order, then evaluates. Each round's `RoundRecord` is created by the loop and
passed to every step, and handed to the results writer when the round ends. Which node serves
which client is the roster's business (`flayer.roster`).

A method overrides only its declarations: what the server holds (`initial_global`), what a
training reply must hold (`upload_spec`), how contributions combine
(`aggregate_contributions`), whether every client must see each new model
(`sync_every_round`) and any extra exchange before round 0 (`prepare_round0`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from torch import nn

from flayer import keys
from flayer.aggregation import Contribution, aggregate, weighted_mean
from flayer.config import Config, StrategyConfig
from flayer.layers import LayerMap
from flayer.method import shared_params
from flayer.pause import hold
from flayer.results.record import ClientEval, RoundRecord
from flayer.roster import Roster
from flayer.seeding import rng_for
from flayer.upload import ReplyError, TensorSpec, UploadSpec, decode, reply_nbytes

log = logging.getLogger(__name__)

RoundCallback = Callable[[RoundRecord], None]
# Where a method syncs every client with each new model (`sync_every_round`), a setting may
# make it lazy: only the clients that train or are evaluated take in the newest model.
SYNC_MODES = ("eager", "lazy")
Accepted = tuple[int, Contribution, dict]  # partition id, contribution, reply metrics


class PflStrategy:
    """Base server strategy. Subclasses declare what clients upload and how it aggregates."""

    def __init__(self, cfg: Config, settings: StrategyConfig, layers: LayerMap,
                 train_metrics: tuple[str, ...] = ()) -> None:
        self.cfg = cfg
        self.settings = settings
        self.layers = layers
        self.train_metrics = train_metrics  # the method's extra train metrics, by name
        self.version = 0  # successful aggregations so far
        self.global_arrays: dict[str, np.ndarray] = {}  # what the server holds and sends
        self.roster = Roster(cfg.num_clients, cfg.backend)

    # ---- what a method declares ----------------------------------------------------------
    def initial_global(self, model: nn.Module) -> dict[str, np.ndarray]:
        """The arrays the server holds and sends, from the run's initial model: every
        parameter by default (a method may hold fewer, or extra modules of its own)."""
        return shared_params(model)

    def prepare_round0(self, grid: Grid, rec: RoundRecord, timeout: float) -> None:
        """Extra exchange before round 0's evaluation (its bytes count in round 0)."""

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

    # ---- the round loop -------------------------------------------------------------------
    def set_initial(self, model: nn.Module) -> None:
        self.global_arrays = self.initial_global(model)

    def run(self, grid: Grid, on_round: RoundCallback | None = None) -> None:
        """Round 0, then cfg.num_rounds training rounds; each finished round goes to
        on_round."""
        self.roster.wait_for_nodes(grid)
        for server_round in range(self.cfg.num_rounds + 1):
            if server_round > 0:
                hold(self.cfg.backend.pause_file, server_round)
            rec = self.play_round(grid, server_round)
            if on_round is not None:
                on_round(rec)

    def play_round(self, grid: Grid, server_round: int) -> RoundRecord:
        """One round: (round 0: prepare; else: sample, train, aggregate), then evaluate."""
        timeout = self.cfg.backend.round_timeout
        start = time.perf_counter()
        rec = RoundRecord(round=server_round, model_version=self.version)
        self.roster.refresh(grid, server_round)
        if server_round == 0:
            self.prepare_round0(grid, rec, timeout)
        else:
            replies = grid.send_and_receive(self.configure_train(server_round, rec),
                                            timeout=timeout)
            self.aggregate_train(server_round, replies, rec)
            if self.evaluate_targets(server_round):
                self.roster.refresh(grid, server_round)
        replies = grid.send_and_receive(self.configure_evaluate(server_round), timeout=timeout)
        self.aggregate_evaluate(server_round, replies, rec)
        rec.model_version = self.version
        rec.seconds = time.perf_counter() - start
        return rec

    def message(self, arrays: ArrayRecord, node: int, kind: str, server_round: int,
                **config: int | float | str | bool) -> Message:
        """A message carrying the global arrays and this round's instructions."""
        cfg = ConfigRecord({keys.SERVER_ROUND: server_round, keys.MODEL_VERSION: self.version,
                            **config})
        content = RecordDict({keys.ARRAYS: arrays, keys.CONFIG: cfg})
        return Message(content=content, dst_node_id=node, message_type=kind)

    def sample(self, server_round: int) -> list[int]:
        """Partition ids that train this round: seeded by run seed and round."""
        known = self.roster.partitions
        k = max(1, int(self.cfg.num_clients * self.cfg.join_ratio))
        k = min(k, len(known))
        chosen = rng_for(self.cfg.seed, "sample", server_round).choice(known, k, replace=False)
        return sorted(int(p) for p in chosen)

    def configure_train(self, server_round: int, rec: RoundRecord) -> list[Message]:
        """Train messages for the sampled clients; a sampled client without a node counts
        as a missing reply."""
        rec.sampled = self.sample(server_round)
        arrays = to_record(self.global_arrays)
        return [self.message(arrays, node, MessageType.TRAIN, server_round)
                for node in self.roster.served(rec.sampled).values()]

    def collect(self, server_round: int, replies: Iterable[Message], spec: UploadSpec,
                expected: int, rec: RoundRecord) -> list[Accepted]:
        """The replies that pass every check, in partition-id order. A missing reply, an error
        or a reply that fails the declaration counts as a failure; every received reply's
        arrays count in the round's upload bytes."""
        replies = list(replies)
        rec.failures += max(0, expected - len(replies))
        accepted: list[Accepted] = []
        for msg in replies:
            if msg.has_error():
                rec.failures += 1
                log.warning("round %d: reply error: %s", server_round, msg.error.reason)
                continue
            rec.upload_bytes += reply_nbytes(msg.content)
            try:
                metrics = dict(msg.content[keys.METRICS])
                weight = float(metrics[keys.NUM_EXAMPLES])
                if not weight > 0:
                    raise ReplyError(f"num-examples {weight}")
                contribution = decode(msg.content, spec, weight)
                accepted.append((int(metrics[keys.PARTITION_ID]), contribution, metrics))
            except (KeyError, ReplyError, TypeError, ValueError) as exc:
                rec.failures += 1
                log.warning("round %d: rejected a reply: %s", server_round, exc)
        return sorted(accepted, key=lambda t: t[0])

    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        rec: RoundRecord) -> bool:
        """Aggregate the accepted training replies into a new global model version; False
        when no reply was accepted (the model and its version stay)."""
        previous = self.global_arrays
        accepted = []
        for pid, contribution, metrics in self.collect(
            server_round, replies, self.upload_spec(previous), len(rec.sampled), rec
        ):
            loss = float(metrics.get(keys.TRAIN_LOSS, float("nan")))
            if np.isfinite(loss):
                accepted.append((pid, contribution, metrics))
            else:
                rec.failures += 1
                log.warning("round %d: rejected a reply with train loss %s", server_round, loss)
        if not accepted:
            return False
        contributions = [c for _, c, _ in accepted]
        self.global_arrays = self.aggregate_contributions(contributions, previous)
        self.version += 1
        rec.trained = len(accepted)
        weights = [c.weight for c in contributions]
        rec.train_loss = weighted_mean([float(m[keys.TRAIN_LOSS]) for *_, m in accepted],
                                       weights)
        for name in self.train_metrics:
            values = [float(m.get(name, float("nan"))) for *_, m in accepted]
            rec.train_metrics[name] = weighted_mean(values, weights)
        return True

    def is_eval_round(self, server_round: int) -> bool:
        return (
            server_round == 0
            or server_round % self.cfg.eval_every == 0
            or server_round == self.cfg.num_rounds
        )

    def evaluated(self, server_round: int) -> list[int]:
        """Partition ids evaluated this round: every client in round 0 and the last round,
        else in an evaluated round an `eval_fraction` share of the run's clients, seeded by
        run seed and round."""
        known = self.roster.partitions
        if not self.is_eval_round(server_round):
            return []
        if server_round in (0, self.cfg.num_rounds) or self.cfg.eval_fraction >= 1:
            return known
        k = min(len(known), max(1, math.ceil(self.cfg.eval_fraction * self.cfg.num_clients)))
        chosen = rng_for(self.cfg.seed, "evaluate", server_round).choice(known, k,
                                                                          replace=False)
        return sorted(int(p) for p in chosen)

    def evaluate_targets(self, server_round: int) -> list[int]:
        """Partition ids sent an evaluate message: the evaluated ones, and every client where
        the method must sync each new model (`evaluate` in the message says which is which)."""
        if self.sync_every_round():
            return self.roster.partitions
        return self.evaluated(server_round)

    def configure_evaluate(self, server_round: int) -> list[Message]:
        evaluated = set(self.evaluated(server_round))
        served = self.roster.served(self.evaluate_targets(server_round))
        if not served:
            return []
        arrays = to_record(self.global_arrays)
        return [self.message(arrays, node, MessageType.EVALUATE, server_round,
                             **{keys.DO_EVALUATE: pid in evaluated})
                for pid, node in sorted(served.items())]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message],
                           rec: RoundRecord) -> None:
        """Every client's evaluation into the round's record, in partition-id order."""
        replies = list(replies)
        expected = self.cfg.num_clients if server_round == 0 else len(
            self.evaluate_targets(server_round))
        rec.failures += max(0, expected - len(replies))
        for msg in replies:
            if msg.has_error():
                rec.failures += 1
                log.warning("round %d: evaluate reply error: %s", server_round, msg.error.reason)
                continue
            try:
                m = msg.content[keys.METRICS]
                if int(m[keys.EVALUATED]):
                    rec.clients.append(client_eval(int(m[keys.PARTITION_ID]), m))
            except (KeyError, TypeError, ValueError) as exc:
                rec.failures += 1
                log.warning("round %d: rejected an evaluate reply: %s", server_round, exc)
        rec.clients.sort(key=lambda c: c.partition_id)


_CORE = {keys.PARTITION_ID, keys.CORRECT, keys.NUM_TEST, keys.AUC, keys.TEST_LOSS,
         keys.EVALUATED, keys.ACCURACY}


def client_eval(pid: int, m: dict) -> ClientEval:
    """A client's evaluate reply as a ClientEval (ValueError for impossible counts)."""
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
