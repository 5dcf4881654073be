"""A simulated executor: a node that serves any client.

Each message names a cohort; the executor serves its clients one after another with one
reused model, reads and writes their state in the run's client state store, and replies with
the weighted sum of their uploads (each accepted by the server's own rule first) and one
metrics record per client, or a failure record for a client whose work failed. A new client
(`new_clients`) is served from nothing and leaves nothing: the store is never read or written
for it. A client's
failure is its computation failing; what the run stands on failing (a damaged client state
file, the run's data) is the run's: the reply is then one `keys.RUN_ERROR` record.
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from flayer.apps.client_work import DataOf, global_of, run_error, runner_for, to_array
from flayer.apps.runtime import set_threads
from flayer.config.schema import Config
from flayer.protocol import keys
from flayer.protocol.aggregation import WeightedSum
from flayer.protocol.replies import accept
from flayer.protocol.upload import encode, reply_nbytes, spec_of
from flayer.state.store import ClientStore
from flayer.util.errors import DataError

log = logging.getLogger(__name__)


class Executor:
    """Serves the cohort a message names, one client after another."""

    def __init__(self, cfg: Config, store: ClientStore) -> None:
        self.cfg = cfg
        self.store = store
        set_threads(int(cfg.backend.client_cpus))
        self.runner = runner_for(cfg, DataOf(cfg))

    @staticmethod
    def cohort(instructions: dict) -> list[int]:
        return [int(p) for p in instructions.get(keys.COHORT, [])]

    def failed(self, content: RecordDict, pid: int, kind: str, exc: Exception,
               upload_bytes: int = 0) -> None:
        log.warning("partition %d: %s failed: %s: %s", pid, kind, type(exc).__name__, exc)
        content[keys.failed_record(pid)] = ConfigRecord(
            {keys.REASON: f"{type(exc).__name__}: {exc}", keys.UPLOAD_BYTES: upload_bytes})

    def train(self, msg: Message) -> Message:
        instructions = dict(msg.content[keys.CONFIG])
        spec = spec_of(msg.content[keys.UPLOAD_SPEC])
        global_arrays = global_of(msg)
        total = WeightedSum()
        content = RecordDict()
        for pid in self.cohort(instructions):
            nbytes = 0
            try:
                done = self.runner.train(pid, instructions, self.store.load(pid), global_arrays)
                self.store.save(pid, done.state)
                upload = RecordDict(encode(done.result.upload))  # as its own reply would be
                nbytes = reply_nbytes(upload)
                contribution = accept(upload, spec, done.metrics)  # as the server would
            except DataError as exc:  # the run's data or store, not this client's work
                return run_error(msg, exc)
            except Exception as exc:  # noqa: BLE001 - a client's failure is the server's count
                self.failed(content, pid, "training", exc, nbytes)
                continue
            total.add(contribution)
            content[keys.client_record(pid)] = MetricRecord(
                {**done.metrics, keys.UPLOAD_BYTES: nbytes})
        content[keys.SUM_NUM] = ArrayRecord({k: to_array(n) for k, n, _ in total.items()})
        content[keys.SUM_DEN] = ArrayRecord({k: to_array(d) for k, _, d in total.items()})
        return Message(content=content, reply_to=msg)

    def evaluate(self, msg: Message) -> Message:
        instructions = dict(msg.content[keys.CONFIG])
        evaluated = {int(p) for p in instructions.get(keys.DO_EVALUATE, [])}
        new = {int(p) for p in instructions.get(keys.NEW_CLIENTS, [])}
        global_arrays = global_of(msg)
        content = RecordDict()
        for pid in self.cohort(instructions):
            try:
                if pid in new:
                    metrics = self.runner.arrive(pid, instructions, global_arrays)
                else:
                    done = self.runner.evaluate(pid, instructions, self.store.load(pid),
                                                global_arrays, pid in evaluated)
                    self.store.save(pid, done.state)
                    metrics = done.metrics
            except DataError as exc:
                return run_error(msg, exc)
            except Exception as exc:  # noqa: BLE001
                self.failed(content, pid, "evaluation", exc)
                continue
            content[keys.client_record(pid)] = MetricRecord(metrics)
        return Message(content=content, reply_to=msg)


