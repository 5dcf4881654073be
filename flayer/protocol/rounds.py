"""The one round loop.

Round 0 evaluates every client before any training (after the method's extra exchange, if it
has one); each later round samples clients (seeded by partition id), checks every training
reply against the method's upload declaration (a reply that fails counts as a failure and is
skipped), aggregates in partition-id order, then evaluates. Each round's `RoundRecord` is
created here, passed to every step, and handed on when the round ends (to the results writer,
then the checkpoint). Which node serves which client is the routing's business: on real
machines the roster (`flayer.protocol.roster`, a node per client), in simulation the executor
pool (`flayer.protocol.cohorts`, a cohort per executor). Contributions arrive one per client
(a SuperNode's upload) or summed per executor, and are combined in partition-id order in
float64. Everything a method changes on the server is its `MethodServer`'s hooks.

New clients (`new_clients`): a sample of the clients, seeded by the run seed alone, is kept out
of every training round: never sampled, never sent a train or sync message, never part of
round 0's extra exchange, so they never shape the global model. In every evaluated round each
gets an evaluate message naming it new (`keys.NEW_CLIENTS`): it takes in the global model as a
client that arrives late, keeps nothing, and its evaluation goes to the record's `new_clients`.
The seen clients' sampling and evaluation shares are of the seen clients.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from torch import nn

from flayer.config.schema import Config
from flayer.protocol import keys
from flayer.protocol.aggregation import WeightedSum, weighted_mean
from flayer.protocol.instructions import NewMessage, flower_message
from flayer.protocol.replies import (
    Collected,
    accept,
    client_eval,
    client_records,
    cohorts,
    count_failures,
    exchange,
    sum_of,
    to_record,
)
from flayer.protocol.roster import Roster, Routing
from flayer.protocol.server import MethodServer
from flayer.protocol.upload import ReplyError, UploadSpec, reply_nbytes, spec_record
from flayer.results.record import RoundRecord
from flayer.run.pause import hold
from flayer.state.checkpoint import ServerState
from flayer.util.seeding import rng_for

log = logging.getLogger(__name__)

RoundCallback = Callable[[RoundRecord], None]
# Where a method syncs every client with each new model (`sync_every_round`), a setting may
# make it lazy: only the clients that train or are evaluated take in the newest model.
SYNC_MODES = ("eager", "lazy")


def held_out(cfg: Config) -> list[int]:
    """The clients kept out of training (`new_clients`): a sample of the partition ids seeded by
    the run seed alone, so that a resumed run, and any routing, holds out the same clients."""
    if cfg.new_clients <= 0:
        return []
    chosen = rng_for(cfg.seed, "new-clients").choice(cfg.num_clients, cfg.new_clients,
                                                     replace=False)
    return sorted(int(p) for p in chosen)


class RoundLoop:
    """The server's rounds for one run: the global model version and arrays it holds, the
    method's server side (`server`) it asks, and the routing of clients to nodes."""

    def __init__(self, cfg: Config, server: MethodServer,
                 train_metrics: tuple[str, ...] = (), routing: Routing | None = None,
                 new_message: NewMessage = flower_message) -> None:
        self.cfg = cfg
        self.server = server
        self.train_metrics = train_metrics  # the method's extra train metrics, by name
        self.version = 0  # successful aggregations so far
        self.global_arrays: dict[str, np.ndarray] = {}  # what the server holds and sends
        # instructions every message carries beyond the round's own (the run folder's key
        # and its newest checkpoint, for SuperNodes that keep their state on disk)
        self.run_instructions: dict[str, int | str] = {}
        # which node serves which client: a node per client unless given (simulation)
        self.roster: Routing = routing or Roster(cfg.num_clients, cfg.backend, new_message)
        self.new_message = new_message
        self.held_out = frozenset(held_out(cfg))  # the new clients, never trained
        self.num_seen = cfg.num_clients - len(self.held_out)

    @property
    def seen(self) -> list[int]:
        """The clients that take part in training: every known client but the new ones."""
        return [p for p in self.roster.partitions if p not in self.held_out]

    def newcomers(self, server_round: int) -> list[int]:
        """The new clients evaluated this round: every known one, in every evaluated round."""
        if not self.is_eval_round(server_round):
            return []
        return [p for p in self.roster.partitions if p in self.held_out]

    @property
    def timeout(self) -> float:
        return self.cfg.backend.round_timeout

    def set_initial(self, model: nn.Module) -> None:
        self.global_arrays = self.server.initial_global(model)

    def server_state(self, server_round: int) -> ServerState:
        """What the server holds after this round, for a checkpoint: the model version and
        the global arrays (a method with more server-side state adds it)."""
        return ServerState(round=server_round, version=self.version,
                           arrays=dict(self.global_arrays), meta={})

    def restore(self, state: ServerState) -> None:
        """Continue from a checkpoint's server state."""
        self.version = state.version
        self.global_arrays = dict(state.arrays)

    def run(self, grid: Grid, on_round: RoundCallback | None = None,
            start_round: int = 0) -> None:
        """Round 0 (unless continuing from a checkpoint), then the training rounds up to
        cfg.num_rounds; each finished round goes to on_round."""
        self.roster.wait_for_nodes(grid)
        for server_round in range(start_round, self.cfg.num_rounds + 1):
            if server_round > 0:
                hold(self.cfg.backend.pause_file, server_round)
            rec = self.play_round(grid, server_round)
            if on_round is not None:
                on_round(rec)

    def play_round(self, grid: Grid, server_round: int) -> RoundRecord:
        """One round: (round 0: prepare; else: sample, train, aggregate), then evaluate."""
        start = time.perf_counter()
        rec = RoundRecord(round=server_round, model_version=self.version)
        self.roster.refresh(grid, server_round)
        if server_round == 0:
            ask = functools.partial(self.ask_every_client, grid)
            self.global_arrays = {**self.global_arrays, **self.server.prepare_round0(ask, rec)}
        else:
            replies = exchange(grid, self.configure_train(server_round, rec), self.timeout)
            self.aggregate_train(server_round, replies, rec)
            if self.evaluate_targets(server_round):
                self.roster.refresh(grid, server_round)
        replies = exchange(grid, self.configure_evaluate(server_round), self.timeout)
        self.aggregate_evaluate(server_round, replies, rec)
        rec.model_version = self.version
        rec.seconds = time.perf_counter() - start
        return rec

    def ask_every_client(self, grid: Grid, rec: RoundRecord, spec: UploadSpec,
                         **config: int | float | str | bool) -> Collected:
        """Before round 0: a train instruction with this declaration (and config) to every
        seen client, and the replies that pass it (their bytes and failures counted in rec)."""
        messages = self.messages(self.seen, MessageType.TRAIN, 0, spec=spec, **config)
        return self.collect(0, exchange(grid, messages, self.timeout), spec, cohorts(messages),
                            rec)

    def messages(self, partition_ids: Iterable[int], kind: str, server_round: int,
                 spec: UploadSpec | None = None, evaluate: Iterable[int] = (),
                 arrays: dict[str, np.ndarray] | None = None, new_clients: Iterable[int] = (),
                 **config: int | float | str | bool) -> list[Message]:
        """One message per node serving some of these clients: the global arrays (or the
        given ones), this round's instructions and the node's cohort; a train message also
        carries the upload declaration, an evaluate message which clients to evaluate and
        which are new clients."""
        record = to_record(self.global_arrays if arrays is None else arrays)
        evaluate, new_clients = set(evaluate), set(new_clients)
        out = []
        for node, cohort in self.roster.route(partition_ids, kind).items():
            new = ({keys.NEW_CLIENTS: [p for p in cohort if p in new_clients]} if new_clients
                   else {})
            content = RecordDict({keys.ARRAYS: record, keys.CONFIG: ConfigRecord({
                **self.run_instructions,
                keys.SERVER_ROUND: server_round, keys.MODEL_VERSION: self.version,
                keys.COHORT: cohort, keys.DO_EVALUATE: [p for p in cohort if p in evaluate],
                **new, **config})})
            if spec is not None:
                content[keys.UPLOAD_SPEC] = spec_record(spec)
            out.append(self.new_message(content, node, kind))
        return out

    def sample(self, server_round: int) -> list[int]:
        """Partition ids that train this round: a `join_ratio` share of the seen clients, seeded
        by run seed and round."""
        known = self.seen
        k = max(1, int(self.num_seen * self.cfg.join_ratio))
        k = min(k, len(known))
        chosen = rng_for(self.cfg.seed, "sample", server_round).choice(known, k, replace=False)
        return sorted(int(p) for p in chosen)

    def configure_train(self, server_round: int, rec: RoundRecord) -> list[Message]:
        """Train messages for the sampled clients; a sampled client without a node counts
        as a missing reply."""
        rec.sampled = self.sample(server_round)
        return self.messages(rec.sampled, MessageType.TRAIN, server_round,
                             spec=self.server.upload_spec(self.global_arrays))

    def collect(self, server_round: int, replies: Iterable[Message], spec: UploadSpec,
                expected: Iterable[int], rec: RoundRecord) -> Collected:
        """The work that passes every check, summed in partition-id order. An expected client
        without an accepted result (no reply, an error, a failed upload check or a train loss
        that is not finite) counts as a failure; every client's upload counts in the round's
        upload bytes, accepted or not."""
        expected = set(expected)
        parts: list[tuple[int, WeightedSum]] = []
        out = Collected()
        for msg in replies:
            if msg.has_error():
                log.warning("round %d: reply error: %s", server_round, msg.error.reason)
                continue
            content = msg.content
            count_failures(server_round, content, rec)
            clients = client_records(content)
            if keys.SUM_NUM in content.array_records:  # an executor's sum over its cohort
                try:
                    part = sum_of(content, spec)
                except (ReplyError, ValueError) as exc:
                    log.warning("round %d: rejected an executor's sum: %s", server_round, exc)
                    continue
                rec.upload_bytes += sum(int(m.get(keys.UPLOAD_BYTES, 0))
                                        for m in clients.values())
                if not set(clients) <= expected:
                    log.warning("round %d: rejected an executor's sum for partitions %s, not "
                                "asked", server_round, sorted(set(clients) - expected))
                elif clients:
                    parts.append((min(clients), part))
                    out.clients.update(clients)
                continue
            rec.upload_bytes += reply_nbytes(content)  # one client's own upload
            try:
                (pid, metrics), = clients.items()
                if pid not in expected:
                    raise ReplyError(f"partition {pid} was not asked")
                contribution = accept(content, spec, metrics)
            except (KeyError, ReplyError, TypeError, ValueError) as exc:
                log.warning("round %d: rejected a reply: %s", server_round, exc)
                continue
            parts.append((pid, WeightedSum.of([contribution])))
            out.clients[pid] = metrics
        for _, part in sorted(parts, key=lambda t: t[0]):
            out.total.merge(part)
        rec.failures += len(expected - set(out.clients))
        return out

    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        rec: RoundRecord) -> bool:
        """Aggregate the accepted training replies into a new global model version; False
        when no reply was accepted (the model and its version stay)."""
        previous = self.global_arrays
        got = self.collect(server_round, replies, self.server.upload_spec(previous), rec.sampled,
                           rec)
        if not got.clients:
            return False
        self.global_arrays = self.server.aggregate_sums(got.total, previous)
        self.version += 1
        accepted = [m for _, m in got.ordered()]
        rec.trained = len(accepted)
        weights = [float(m[keys.NUM_EXAMPLES]) for m in accepted]
        rec.train_loss = weighted_mean([float(m[keys.TRAIN_LOSS]) for m in accepted], weights)
        for name in self.train_metrics:
            values = [float(m.get(name, float("nan"))) for m in accepted]
            rec.train_metrics[name] = weighted_mean(values, weights)
        return True

    def is_eval_round(self, server_round: int) -> bool:
        return (
            server_round == 0
            or server_round % self.cfg.eval_every == 0
            or server_round == self.cfg.num_rounds
        )

    def evaluated(self, server_round: int) -> list[int]:
        """Seen clients evaluated this round: every one in round 0 and the last round, else in
        an evaluated round an `eval_fraction` share of them, seeded by run seed and round
        (the new clients: `newcomers`)."""
        known = self.seen
        if not self.is_eval_round(server_round):
            return []
        if server_round in (0, self.cfg.num_rounds) or self.cfg.eval_fraction >= 1:
            return known
        k = min(len(known), max(1, math.ceil(self.cfg.eval_fraction * self.num_seen)))
        chosen = rng_for(self.cfg.seed, "evaluate", server_round).choice(known, k,
                                                                          replace=False)
        return sorted(int(p) for p in chosen)

    def evaluate_targets(self, server_round: int) -> list[int]:
        """Partition ids sent an evaluate message: the evaluated ones, every seen client where
        the method must sync each new model, and the new clients in an evaluated round (the
        message says which is which)."""
        seen = self.seen if self.server.sync_every_round() else self.evaluated(server_round)
        return sorted(seen + self.newcomers(server_round))

    def configure_evaluate(self, server_round: int) -> list[Message]:
        return self.messages(self.evaluate_targets(server_round), MessageType.EVALUATE,
                             server_round, evaluate=self.evaluated(server_round),
                             new_clients=self.newcomers(server_round))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message],
                           rec: RoundRecord) -> None:
        """Every client's evaluation into the round's record (a new client's apart), in
        partition-id order; a client sent an evaluate message without an answer counts as a
        failure."""
        expected = set(self.roster.partitions if server_round == 0
                       else self.evaluate_targets(server_round))
        answered: set[int] = set()
        for msg in replies:
            if msg.has_error():
                log.warning("round %d: evaluate reply error: %s", server_round, msg.error.reason)
                continue
            count_failures(server_round, msg.content, rec)
            for pid, m in client_records(msg.content).items():
                try:
                    if int(m[keys.EVALUATED]):
                        evals = rec.new_clients if pid in self.held_out else rec.clients
                        evals.append(client_eval(pid, m))
                    answered.add(pid)
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("round %d: rejected an evaluate reply: %s", server_round, exc)
        rec.failures += len(expected - answered)
        if server_round == 0:
            rec.failures += self.cfg.num_clients - len(self.roster.partitions)
        rec.clients.sort(key=lambda c: c.partition_id)
        rec.new_clients.sort(key=lambda c: c.partition_id)
