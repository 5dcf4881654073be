"""Replies, as the server receives and accepts them.

A reply holds one metrics record per client it answers for (`keys.client_record`), a failure
record per client whose work failed (`keys.failed_record`), or one `keys.RUN_ERROR` record
when the run cannot go on. A client's training reply is accepted by one rule (`accept`),
which the server applies to a SuperNode's reply and a simulated executor to each client it
serves before adding the client's upload to its sum.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid

from flayer.protocol import keys
from flayer.protocol.aggregation import Contribution, WeightedSum
from flayer.protocol.upload import ReplyError, UploadSpec, decode
from flayer.results.record import ClientEval, RoundRecord
from flayer.util.errors import RunError

log = logging.getLogger(__name__)


@dataclass
class Collected:
    """A round's accepted training work: the weighted sum of the accepted uploads and each
    accepted client's reply metrics, by partition id."""

    total: WeightedSum = field(default_factory=WeightedSum)
    clients: dict[int, dict] = field(default_factory=dict)

    def ordered(self) -> list[tuple[int, dict]]:
        return sorted(self.clients.items())


def accept(content: RecordDict, spec: UploadSpec, metrics: Mapping) -> Contribution:
    """A client's training reply as the server takes it in, or ReplyError: a positive weight
    (its training samples), a finite train loss, and an upload that matches the method's
    declaration."""
    weight = float(metrics[keys.NUM_EXAMPLES])
    if not weight > 0:
        raise ReplyError(f"num-examples {weight}")
    loss = float(metrics.get(keys.TRAIN_LOSS, float("nan")))
    if not math.isfinite(loss):
        raise ReplyError(f"train loss {loss}")
    return decode(content, spec, weight)


def exchange(grid: Grid, messages: Iterable[Message], timeout: float) -> list[Message]:
    """Send the messages and collect their replies; RunError where a reply says the run
    cannot go on (a damaged client state file, the run's data), before any reply is used."""
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    for msg in replies:
        if not msg.has_error() and keys.RUN_ERROR in msg.content.config_records:
            raise RunError(str(msg.content.config_records[keys.RUN_ERROR][keys.REASON]))
    return replies


def cohorts(messages: Iterable[Message]) -> list[int]:
    """Every partition id the messages are for."""
    return sorted(int(p) for m in messages for p in m.content[keys.CONFIG][keys.COHORT])


def client_records(content: RecordDict) -> dict[int, dict]:
    """Partition id -> metrics, from a reply's per-client records."""
    out = {}
    for name, record in content.metric_records.items():
        if name.startswith(keys.CLIENT_PREFIX):
            out[int(name[len(keys.CLIENT_PREFIX):])] = dict(record)
    return out


def count_failures(server_round: int, content: RecordDict, rec: RoundRecord) -> None:
    """Log each client a reply reports failed, and count the bytes its upload held."""
    for name, record in content.config_records.items():
        if name.startswith(keys.FAILED_PREFIX):
            rec.upload_bytes += int(record.get(keys.UPLOAD_BYTES, 0))
            log.warning("round %d: client %s: %s", server_round, name[len(keys.FAILED_PREFIX):],
                        record.get(keys.REASON, "failed"))


def sum_of(content: RecordDict, spec: UploadSpec) -> WeightedSum:
    """An executor's weighted sum, checked against the declaration's tensors and shapes."""
    num, den = content.array_records[keys.SUM_NUM], content.array_records.get(keys.SUM_DEN)
    if den is None or set(num) != set(den):
        raise ReplyError("a sum without the weights of each tensor")
    if num and set(num) != set(spec):
        raise ReplyError(f"summed tensors {sorted(set(num) ^ set(spec))} differ from the "
                         "declaration")
    items = []
    for name in num:
        n, d = num[name].numpy(), den[name].numpy()
        if tuple(n.shape) != spec[name].shape:
            raise ReplyError(f"{name}: summed shape {n.shape}, declared {spec[name].shape}")
        if not (np.all(np.isfinite(n)) and np.all(np.isfinite(d)) and np.all(d >= 0)):
            raise ReplyError(f"{name}: a sum with NaN, Inf or negative weights")
        items.append((name, n, d))
    return WeightedSum.from_items(items)


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
