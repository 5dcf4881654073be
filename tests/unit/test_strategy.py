"""The base strategy with mocked replies: reply checks, failures, order, bytes, sampling."""

import threading
import time

import numpy as np
import pytest
from flwr.app import (
    Message,
    MetricRecord,
    RecordDict,
)

from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from flayer.protocol import keys
from flayer.protocol.upload import Upload, encode
from flayer.results.record import RoundRecord
from flayer.run.pause import hold, pause_asked
from tests.helpers import FMNIST_SPEC, loop_for, make_config, mock_reply

reply = mock_reply


def train_reply(pid: int, arrays: dict, n: int, masks: dict | None = None,
                loss: float = 1.0) -> Message:
    content = RecordDict({
        **encode(Upload(arrays=arrays, masks=masks or {})),
        keys.client_record(pid): MetricRecord({keys.PARTITION_ID: pid, keys.NUM_EXAMPLES: n,
                                    keys.TRAIN_LOSS: loss}),
    })
    return reply(100 + pid, content)


def strategy_for(name: str, *overrides: str):
    """The method's strategy for 3 clients on nodes 100..102, and round 1's record with every
    client sampled."""
    cfg = make_config(f"strategy={name}", "num_clients=3", *overrides)
    model = build_model(cfg, FMNIST_SPEC)
    strategy = loop_for(cfg, model)
    for pid in range(3):
        assert strategy.roster.claim(pid, 100 + pid)
    return strategy, shared_params(model), RoundRecord(round=1, model_version=0,
                                                       sampled=[0, 1, 2])


def scaled(arrays: dict, value: float) -> dict:
    return {k: np.full_like(v, value) for k, v in arrays.items()}


def test_fedavg_weighted_mean_in_partition_order_and_bytes():
    strategy, initial, rec = strategy_for("fedavg")
    replies = [train_reply(2, scaled(initial, 3.0), 30), train_reply(0, scaled(initial, 1.0), 10)]
    assert strategy.aggregate_train(1, replies, rec) and strategy.version == 1
    for value in strategy.global_arrays.values():
        np.testing.assert_allclose(value, 2.5)  # (10*1 + 30*3) / 40
    assert rec.trained == 2 and rec.failures == 1  # client 1 never replied
    assert rec.upload_bytes == 2 * sum(v.nbytes for v in initial.values())
    assert rec.train_loss == pytest.approx(1.0)


@pytest.mark.parametrize("bad", ["nan", "missing", "shape", "error", "weight"])
def test_a_bad_reply_counts_as_a_failure_and_does_not_touch_the_model(bad):
    strategy, initial, rec = strategy_for("fedavg")
    good = train_reply(0, scaled(initial, 1.0), 10)
    arrays = scaled(initial, 5.0)
    n = 10
    if bad == "nan":
        arrays["fc.bias"][0] = np.nan
    elif bad == "missing":
        arrays.pop("fc.bias")
    elif bad == "shape":
        arrays["fc.bias"] = np.zeros(3, dtype=np.float32)
    elif bad == "weight":
        n = 0
    broken = reply(101, error="boom") if bad == "error" else train_reply(1, arrays, n)
    assert strategy.aggregate_train(
        1, [good, broken, train_reply(2, scaled(initial, 1.0), 10)], rec)
    for value in strategy.global_arrays.values():
        np.testing.assert_allclose(value, 1.0)
    assert rec.failures == 1 and rec.trained == 2


def test_all_replies_failing_keeps_the_model_and_version():
    strategy, initial, rec = strategy_for("fedavg")
    assert not strategy.aggregate_train(1, [reply(100, error="x"), reply(101, error="y")], rec)
    assert strategy.version == 0
    for name, value in strategy.global_arrays.items():
        np.testing.assert_array_equal(value, initial[name])
    assert rec.failures == 3


def test_flayer_rejects_a_mask_with_the_wrong_count():
    strategy, initial, rec = strategy_for("flayer")
    arrays = scaled(initial, 1.0)
    spec = strategy.server.upload_spec(initial)
    masks = {}
    for name, ts in spec.items():
        if ts.kept is not None:
            m = np.zeros(int(np.prod(ts.shape)), dtype=bool)
            m[: ts.kept] = True
            masks[name] = m.reshape(ts.shape)
    good = train_reply(0, arrays, 10, masks)
    bad_masks = dict(masks)
    bad_masks["conv1.0.bias"] = np.ones_like(masks["conv1.0.bias"])
    bad = train_reply(1, arrays, 10, bad_masks)
    assert strategy.aggregate_train(1, [good, bad], rec)
    assert rec.trained == 1
    assert rec.failures == 2  # the bad reply and the missing third


def test_flayer_masking_off_declares_full_tensors():
    strategy, initial, _ = strategy_for("flayer", "strategy.masked_upload=false")
    assert all(ts.kept is None for ts in strategy.server.upload_spec(initial).values())


def test_sampling_is_seeded_by_run_seed_and_round():
    a, _, _ = strategy_for("fedavg", "join_ratio=0.67", "seed=1")
    b, _, _ = strategy_for("fedavg", "join_ratio=0.67", "seed=1")
    assert [a.sample(r) for r in range(1, 6)] == [b.sample(r) for r in range(1, 6)]
    assert all(len(a.sample(r)) == 2 for r in range(1, 6))
    assert len({tuple(a.sample(r)) for r in range(1, 30)}) > 1


def test_evaluate_round_records_every_client_in_partition_order():
    strategy, _, rec = strategy_for("fedavg")

    def eval_reply(pid, correct, n):
        m = MetricRecord({keys.PARTITION_ID: pid, keys.EVALUATED: 1, keys.CORRECT: correct,
                          keys.NUM_TEST: n, keys.ACCURACY: correct / n, keys.AUC: 0.9,
                          keys.TEST_LOSS: 0.5})
        return reply(100 + pid, RecordDict({keys.client_record(pid): m}))

    strategy.aggregate_evaluate(1, [eval_reply(2, 9, 10), eval_reply(0, 1, 10),
                                    eval_reply(1, 5, 10)], rec)
    assert [c.partition_id for c in rec.clients] == [0, 1, 2]
    assert [c.accuracy for c in rec.clients] == [0.1, 0.5, 0.9]
    assert rec.failures == 0


def test_configure_messages_carry_the_model_version():
    strategy, initial, rec = strategy_for("flayer")
    strategy.version = 4
    msgs = strategy.configure_train(5, rec)
    assert [m.metadata.dst_node_id for m in msgs] == [100, 101, 102]
    assert all(m.content[keys.CONFIG][keys.MODEL_VERSION] == 4 for m in msgs)
    assert all(m.content[keys.CONFIG][keys.SERVER_ROUND] == 5 for m in msgs)


def test_pause_file_empty_holds_any_round_and_a_number_holds_from_that_round(tmp_path, caplog):
    pause = tmp_path / "pause"
    assert not pause_asked(pause, 1)  # no file: no hold
    pause.touch()
    assert pause_asked(pause, 1) and pause_asked(pause, 7)
    pause.write_text("3\n")
    assert [pause_asked(pause, r) for r in (1, 2, 3, 4)] == [False, False, True, True]
    pause.write_text("soon")  # not a round number: hold (the safe reading), and say so
    with caplog.at_level("WARNING"):
        assert pause_asked(pause, 1)
    assert "'soon'" in caplog.text and "not a round number" in caplog.text


def test_hold_waits_until_the_pause_file_goes(tmp_path):
    pause = tmp_path / "pause"
    pause.write_text("2")
    t0 = time.monotonic()
    hold(str(pause), 1)  # before round 2 only: no wait
    assert time.monotonic() - t0 < 0.5
    removed_at = []

    def remove_later():
        time.sleep(1.0)
        removed_at.append(time.monotonic())
        pause.unlink()

    remover = threading.Thread(target=remove_later)
    remover.start()
    hold(str(pause), 2)
    released = time.monotonic()
    remover.join()
    assert removed_at and released >= removed_at[0]


def executor_reply(node: int, clients: dict[int, tuple[dict, int]], shape_of=None) -> Message:
    """An executor's reply: the weighted sum of its clients' uploads and a record each."""
    from flwr.app import Array, ArrayRecord

    from flayer.protocol.aggregation import Contribution, WeightedSum

    total = WeightedSum.of(Contribution(n, arrays) for arrays, n in clients.values())
    num = {k: Array(np.ascontiguousarray(v if shape_of is None else np.zeros(shape_of)))
           for k, v, _ in total.items()}
    den = {k: Array(np.ascontiguousarray(np.atleast_1d(d))) for k, _, d in total.items()}
    content = RecordDict({keys.SUM_NUM: ArrayRecord(num), keys.SUM_DEN: ArrayRecord(den)})
    for pid, (arrays, n) in clients.items():
        content[keys.client_record(pid)] = MetricRecord({
            keys.PARTITION_ID: pid, keys.NUM_EXAMPLES: n, keys.TRAIN_LOSS: 1.0,
            keys.UPLOAD_BYTES: sum(v.nbytes for v in arrays.values())})
    return reply(node, content)


def test_executor_sums_combine_into_the_weighted_mean_of_all_clients():
    strategy, initial, rec = strategy_for("fedavg")
    a = executor_reply(7, {0: (scaled(initial, 1.0), 10), 2: (scaled(initial, 3.0), 30)})
    b = executor_reply(8, {1: (scaled(initial, 5.0), 20)})
    assert strategy.aggregate_train(1, [b, a], rec)
    for value in strategy.global_arrays.values():
        np.testing.assert_allclose(value, (10 * 1 + 30 * 3 + 20 * 5) / 60, rtol=1e-6)
    assert rec.trained == 3 and rec.failures == 0
    assert rec.upload_bytes == 3 * sum(v.nbytes for v in initial.values())


def test_a_malformed_executor_sum_fails_its_whole_cohort():
    strategy, initial, rec = strategy_for("fedavg")
    good = executor_reply(7, {0: (scaled(initial, 1.0), 10)})
    bad = executor_reply(8, {1: (scaled(initial, 5.0), 20), 2: (scaled(initial, 5.0), 20)},
                         shape_of=(3,))
    assert strategy.aggregate_train(1, [good, bad], rec)
    for value in strategy.global_arrays.values():
        np.testing.assert_allclose(value, 1.0)
    assert rec.trained == 1 and rec.failures == 2
