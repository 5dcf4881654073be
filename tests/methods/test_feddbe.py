"""FedDBE: the personal bias is learned and never uploaded; round 0's phase reports the running
feature mean without touching the client's model; the server's global mean is the
sample-weighted mean of the reports, counted in round 0 and kept through aggregation."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from flwr.app import Message, MessageType, MetricRecord, RecordDict

from baselines.feddbe import (
    FEATURE_MEAN,
    GLOBAL_MEAN,
    PHASE,
    PHASE_MEAN,
    RUNNING_MEAN,
    FedDBEClient,
)
from flayer.nn.layers import features
from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from flayer.nn.training import batches
from flayer.protocol import keys
from flayer.protocol.aggregation import Contribution, WeightedSum
from flayer.protocol.upload import Upload, encode
from flayer.results.record import RoundRecord
from tests.helpers import (
    FMNIST_SPEC,
    client_env,
    loop_for,
    make_config,
    mock_reply,
    tiny_client_data,
)
from tests.helpers import TinyOutHead as Tiny


def make_client(kind: str = "cnn", *overrides: str, phase: bool = False) -> FedDBEClient:
    cfg = make_config("strategy=feddbe", "batch_size=8", "lr=0.05", *overrides)
    if kind == "cnn":
        model = build_model(cfg, FMNIST_SPEC)
    else:
        torch.manual_seed(0)
        model = Tiny()
    env = client_env(cfg, model, tiny_client_data(n_train=16, n_test=10),
                     {PHASE: PHASE_MEAN} if phase else {})
    return FedDBEClient(env, model)


def with_mean(client: FedDBEClient, value: float = 0.5) -> dict[str, np.ndarray]:
    glob = shared_params(client.model.net)
    return {**glob, GLOBAL_MEAN: np.full(client.model.bias.numel(), value, dtype=np.float32)}


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_bias_is_learned_and_never_uploaded(kind):
    client = make_client(kind)
    glob = with_mean(client)
    client.receive(glob, version=1)
    result = client.fit(glob, version=1)
    bias = client.model.bias.detach().numpy()
    assert np.abs(bias).sum() > 0  # the bias trained with the model
    sent = result.upload.arrays
    assert set(sent) == set(client.env.layers.param_names)  # the base model's tensors only
    for name, value in shared_params(client.model.net).items():
        np.testing.assert_array_equal(sent[name], value)
    assert not any(v.shape == bias.shape and np.allclose(v, bias) for v in sent.values())
    assert RUNNING_MEAN in client.extra and "model/bias" in client.state()[0]
    assert result.num_examples == 16 and np.isfinite(result.train_loss)


def test_the_head_reads_feature_plus_bias():
    client = make_client()
    with torch.no_grad():
        client.model.bias.fill_(0.3)
    x = client.env.data.to_input(client.env.data.x_test[:4])
    net, layers = client.model.net, client.env.layers
    expected = layers.head_module(net)(features(net, layers, x) + 0.3)
    torch.testing.assert_close(client.model(x), expected)


def test_mean_regularizer_pulls_toward_the_global_mean():
    # same data, same seed: only kappa differs; the running mean must end nearer the target
    far = 3.0
    ends = {}
    for kappa in (0.0, 50.0):
        client = make_client("tiny", f"strategy.kappa={kappa}")
        glob = with_mean(client, far)
        client.fit(glob, version=1)
        ends[kappa] = float(np.abs(client.extra[RUNNING_MEAN] - far).mean())
    assert ends[50.0] < ends[0.0]


def test_train_loss_is_cross_entropy_plus_kappa_times_the_regularizer():
    client = make_client("tiny", "strategy.kappa=7")
    glob = with_mean(client, 2.0)
    result = client.fit(glob, version=1)
    m = result.metrics
    assert m is not None and set(m) == set(FedDBEClient.train_metrics)
    assert m["mean-reg"] > 0
    assert result.train_loss == pytest.approx(m["ce-loss"] + 7 * m["mean-reg"])


def test_fit_without_a_global_mean_is_an_error():
    client = make_client()
    with pytest.raises(RuntimeError):
        client.fit(shared_params(client.model.net), version=1)


def test_phase_reports_the_running_mean_and_leaves_the_model_alone():
    client = make_client("tiny", "lr=0.0", phase=True)  # lr 0: features fixed, mean checkable
    glob = shared_params(client.model.net)
    client.receive(glob, version=0)
    before = {k: v.detach().clone() for k, v in client.model.state_dict().items()}
    result = client.fit(glob, version=0)
    assert set(result.upload.arrays) == {FEATURE_MEAN}
    assert result.num_examples == 16
    for k, v in client.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # BN statistics included
    # hand-computed: m <- 0.9 m + 0.1 mean(h) over the phase's batches, from m = 0
    data, layers = client.env.data, client.env.layers
    net = client.model.net
    net.train()
    m = torch.zeros(16)
    with torch.no_grad():
        for idx in batches(data.num_train, 8, client.generator("feddbe-mean", 0)):
            h = features(net, layers, data.to_input(data.x_train[idx]))
            m = 0.9 * m + 0.1 * h.mean(0)
    np.testing.assert_allclose(result.upload.arrays[FEATURE_MEAN], m.numpy(), rtol=1e-5)


# ---- the server side with mocked replies ---------------------------------------------------
reply = mock_reply


def mean_reply(pid: int, value: np.ndarray, n: int) -> Message:
    content = RecordDict({
        **encode(Upload(arrays={FEATURE_MEAN: value.astype(np.float32)})),
        keys.client_record(pid): MetricRecord({keys.PARTITION_ID: pid, keys.NUM_EXAMPLES: n,
                                    keys.TRAIN_LOSS: 1.0}),
    })
    return reply(100 + pid, content)


class FakeGrid:
    """Answers the phase's train messages with canned replies; records what was sent."""

    def __init__(self, replies: dict[int, Message]) -> None:
        self.replies = replies
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return [102, 100, 101, 103]

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        self.sent = list(messages)
        return [self.replies[m.metadata.dst_node_id] for m in self.sent
                if m.metadata.dst_node_id in self.replies]


@pytest.fixture
def strategy():
    cfg = make_config("strategy=feddbe", "num_clients=4")
    model = build_model(cfg, FMNIST_SPEC)
    s = loop_for(cfg, model)
    for pid in range(4):
        s.roster.claim(pid, 100 + pid)
    return s


def test_global_mean_is_the_sample_weighted_mean_of_the_reports(strategy):
    w = strategy.server.width
    ramp = np.arange(w, dtype=np.float32)
    replies = {
        100: mean_reply(0, np.full(w, 1.0), 10),
        101: mean_reply(1, np.full(w, 4.0) + ramp, 30),
        102: mean_reply(2, np.zeros(3), 50),  # wrong width: rejected
        # node 103 never answers
    }
    grid = FakeGrid(replies)
    model_arrays = dict(strategy.global_arrays)
    rec = RoundRecord(round=0, model_version=0)
    strategy.global_arrays.update(strategy.server.prepare_round0(
        partial(strategy.ask_every_client, grid), rec))
    out = strategy.global_arrays
    expected = (10 * 1.0 + 30 * (4.0 + ramp)) / 40  # = 3.25 + 0.75 * ramp
    np.testing.assert_allclose(out[GLOBAL_MEAN], expected, rtol=1e-6)
    for name, value in model_arrays.items():  # the model itself is unchanged
        np.testing.assert_array_equal(out[name], value)
    assert rec.failures == 2  # the bad reply and the silent node
    assert rec.upload_bytes == 2 * w * 4 + 3 * 4  # every reply's arrays count in round 0
    assert sorted(m.metadata.dst_node_id for m in grid.sent) == [100, 101, 102, 103]
    assert all(m.metadata.message_type == MessageType.TRAIN for m in grid.sent)
    assert all(m.content[keys.CONFIG][PHASE] == PHASE_MEAN for m in grid.sent)
    assert all(m.content[keys.CONFIG][keys.SERVER_ROUND] == 0 for m in grid.sent)


def test_no_report_at_all_stops_the_run(strategy):
    grid = FakeGrid({100: reply(100, error="boom")})
    rec = RoundRecord(round=0, model_version=0)
    with pytest.raises(RuntimeError):
        strategy.global_arrays.update(strategy.server.prepare_round0(
        partial(strategy.ask_every_client, grid), rec))
    assert rec.failures == 4


def test_global_mean_is_never_uploaded_and_survives_aggregation(strategy):
    g = np.full(strategy.server.width, 2.0, dtype=np.float32)
    held = {**strategy.global_arrays, GLOBAL_MEAN: g}
    spec = strategy.server.upload_spec(held)
    assert GLOBAL_MEAN not in spec and set(spec) == set(strategy.server.layers.param_names)
    model = {k: v for k, v in held.items() if k != GLOBAL_MEAN}
    ones = Contribution(10, {k: np.ones_like(v) for k, v in model.items()})
    fours = Contribution(30, {k: np.full_like(v, 4.0) for k, v in model.items()})
    out = strategy.server.aggregate_sums(WeightedSum.of([ones, fours]), held)
    np.testing.assert_array_equal(out[GLOBAL_MEAN], g)
    np.testing.assert_allclose(out["fc.weight"], 3.25)


# What strategy=feddbe refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"feddbe": ["strategy.momentum=0", "strategy.momentum=1.5", "strategy.kappa=-1"]}
