"""FedProto: per-class mean features of the trained model uploaded as sums and counts, the
server's class-count-weighted global prototypes (absent classes keep none), the prototype
regularizer, prediction by the nearest global prototype, the model never travelling and the
upload far below a model's bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.fedproto import (
    ABSENT_GAP,
    COUNTS,
    PRESENT,
    PROTOTYPES,
    SUMS,
    FedProtoClient,
    global_prototypes,
    prototype_logits,
    prototype_regularizer,
    prototype_upload,
)
from flayer.nn.layers import LayerMap, features
from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from flayer.protocol.aggregation import Contribution, WeightedSum
from flayer.protocol.rounds import RoundLoop
from flayer.protocol.upload import Upload
from flayer.util.errors import ConfigError
from tests.helpers import (
    FMNIST_SPEC,
    accepted,
    client_env,
    loop_for,
    make_config,
    tiny_client_data,
)
from tests.helpers import TinyOutHead as Tiny
from tests.localgrid import run_local


def base_model(kind: str, cfg) -> nn.Module:
    if kind == "cnn":
        return build_model(cfg, FMNIST_SPEC)
    torch.manual_seed(0)
    return Tiny()


def make_client(kind: str = "tiny", *overrides: str) -> FedProtoClient:
    cfg = make_config("strategy=fedproto", "batch_size=8", "lr=0.05", *overrides)
    model = base_model(kind, cfg)
    return FedProtoClient(client_env(cfg, model, tiny_client_data(n_train=16, n_test=10)),
                          model)


def strategy_for(kind: str = "cnn") -> tuple[RoundLoop, nn.Module]:
    cfg = make_config("strategy=fedproto")
    model = base_model(kind, cfg)
    return loop_for(cfg, model), model


def held(prototypes: np.ndarray, present: list[int]) -> dict[str, np.ndarray]:
    flags = np.zeros(len(prototypes), dtype=np.float32)
    flags[present] = 1.0
    return {PROTOTYPES: prototypes.astype(np.float32), PRESENT: flags}


def test_client_uploads_per_class_feature_sums_and_counts_of_the_trained_model():
    client = make_client()
    strategy, _ = strategy_for("tiny")
    client.receive(strategy.global_arrays, version=0)
    result = client.fit(strategy.global_arrays, version=0)
    data, layers = client.env.data, client.env.layers
    n = data.num_train
    assert result.num_examples == n and set(result.upload.arrays) == {SUMS, COUNTS}
    # by hand: the trained model in eval mode, features summed per class
    model = client.model
    model.eval()
    with torch.no_grad():
        h = features(model, layers, data.to_input(data.x_train)).double()
    sent = result.upload.arrays
    for j in range(data.num_classes):
        mine = data.y_train == j
        np.testing.assert_allclose(sent[COUNTS][j] * n, int(mine.sum()), rtol=1e-6)
        np.testing.assert_allclose(sent[SUMS][j] * n, h[mine].sum(0).numpy(), rtol=1e-5,
                                   atol=1e-5)
    absent = [j for j in range(10) if not (data.y_train == j).any()]
    assert absent  # 16 samples of 10 classes: the tiny data lacks some classes
    assert np.all(sent[SUMS][absent] == 0) and np.all(sent[COUNTS][absent] == 0)
    # the mean of a present class is its local prototype
    j = int(data.y_train[0])
    np.testing.assert_allclose(sent[SUMS][j] / sent[COUNTS][j],
                               h[data.y_train == j].mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_server_weights_prototypes_by_class_counts_and_absent_classes_keep_none():
    c, d = 4, 3
    start = held(np.zeros((c, d)), [])
    # client a: 6 samples, class 0 x2 (mean 1), class 1 x4 (mean 2); client b: 2 samples,
    # class 0 x1 (mean 7), class 2 x1 (mean -1); class 3: nobody
    sums_a = np.array([[2.0] * d, [8.0] * d, [0.0] * d, [0.0] * d])
    sums_b = np.array([[7.0] * d, [0.0] * d, [-1.0] * d, [0.0] * d])
    ups = [(prototype_upload(sums_a, np.array([2.0, 4, 0, 0]), 6), 6),
           (prototype_upload(sums_b, np.array([1.0, 0, 1, 0]), 2), 2)]
    total = WeightedSum.of([Contribution(w, up) for up, w in ups])
    out = global_prototypes(total, start)
    np.testing.assert_allclose(out[PROTOTYPES][0], (2.0 + 7.0) / 3, rtol=1e-6)  # weighted
    assert not np.allclose(out[PROTOTYPES][0], (1.0 + 7.0) / 2)  # not the uniform mean
    np.testing.assert_allclose(out[PROTOTYPES][1], 2.0, rtol=1e-6)
    np.testing.assert_allclose(out[PROTOTYPES][2], -1.0, rtol=1e-6)
    np.testing.assert_array_equal(out[PRESENT], [1, 1, 1, 0])
    np.testing.assert_array_equal(out[PROTOTYPES][3], 0.0)
    # next round only client b reports: class 1 keeps its prototype, class 3 still has none
    total = WeightedSum.of([Contribution(2, ups[1][0])])
    again = global_prototypes(total, out)
    np.testing.assert_allclose(again[PROTOTYPES][0], 7.0, rtol=1e-6)
    np.testing.assert_allclose(again[PROTOTYPES][1], 2.0, rtol=1e-6)
    np.testing.assert_array_equal(again[PRESENT], [1, 1, 1, 0])
    assert again[PROTOTYPES].dtype == np.float32 and again[PRESENT].dtype == np.float32


def test_strategy_holds_only_prototypes_and_declares_sums_and_counts():
    strategy, model = strategy_for()
    glob = strategy.global_arrays
    width = LayerMap(model).feature_width(model)
    assert set(glob) == {PROTOTYPES, PRESENT}  # the model never travels
    assert glob[PROTOTYPES].shape == (10, width) and not glob[PRESENT].any()
    spec = strategy.server.upload_spec(glob)
    assert {k: v.shape for k, v in spec.items()} == {SUMS: (10, width), COUNTS: (10,)}
    up = prototype_upload(np.ones((10, width)), np.ones(10), 10)
    a, _ = accepted(Upload(arrays=up), spec, 10.0)
    out = strategy.server.aggregate_sums(WeightedSum.of([a]), glob)
    np.testing.assert_allclose(out[PROTOTYPES], 1.0)
    assert out[PRESENT].all()


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_upload_is_far_below_the_model(kind):
    client = make_client(kind)
    strategy, model = strategy_for(kind)
    client.receive(strategy.global_arrays, version=0)
    result = client.fit(strategy.global_arrays, version=0)
    _, nbytes = accepted(result.upload, strategy.server.upload_spec(strategy.global_arrays),
                        result.num_examples)
    model_bytes = sum(v.nbytes for v in shared_params(model).values())
    width = LayerMap(model).feature_width(model)
    assert nbytes == (10 * width + 10) * 4
    assert nbytes < model_bytes / 20


def test_regularizer_is_the_mean_squared_distance_to_present_prototypes():
    h = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]])
    y = torch.tensor([0, 1, 2])
    prototypes = torch.tensor([[0.0, 0.0], [1.0, 1.0], [9.0, 9.0]])
    present = torch.tensor([True, True, False])
    # (1 + 4) + (1 + 1) + 0 (class 2 has no prototype), over 3 samples x 2 dims
    reg = prototype_regularizer(h, y, prototypes, present)
    assert float(reg) == pytest.approx(7 / 6)
    hg = h.clone().requires_grad_(True)
    prototype_regularizer(hg, y, prototypes, present).backward()
    assert torch.all(hg.grad[2] == 0)  # no pull on a sample without a prototype
    expected = F.mse_loss(torch.stack([h[0], h[1], h[2]]),
                          torch.stack([prototypes[0], prototypes[1], h[2]]))
    assert float(reg) == pytest.approx(float(expected))  # PFLlib's MSELoss form


def test_nearest_present_prototype_is_predicted():
    prototypes = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [1.0, 1.0]])
    present = torch.tensor([True, True, True, False])
    h = torch.tensor([[0.5, 0.2], [3.0, 0.5], [0.2, 5.0], [1.0, 1.0]])
    logits = prototype_logits(h, prototypes, present)
    # the last sample sits on the absent class's point: the nearest present one wins
    assert logits.argmax(1).tolist() == [0, 1, 2, 0]
    d = ((h[:, None, :] - prototypes[None]) ** 2).mean(-1)
    torch.testing.assert_close(logits[:, :3], -d[:, :3])
    torch.testing.assert_close(logits[:, 3], (-d[:, :3]).min(1).values - ABSENT_GAP)
    assert torch.isfinite(F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])))


def test_training_adds_lamda_times_the_regularizer_and_pulls_features():
    far = 3.0
    ends, results = {}, {}
    for lamda in (0.0, 10.0):
        client = make_client("cnn", f"strategy.lamda={lamda}", "lr=0.01")  # no BatchNorm
        strategy, _ = strategy_for("cnn")
        glob = strategy.global_arrays
        glob = held(np.full_like(glob[PROTOTYPES], far), list(range(10)))
        client.receive(glob, version=1)
        results[lamda] = client.fit(glob, version=1)
        up = results[lamda].upload.arrays
        present = up[COUNTS] > 0
        means = up[SUMS][present] / up[COUNTS][present, None]
        ends[lamda] = float(np.abs(means - far).mean())
    assert ends[10.0] < ends[0.0]  # the features moved toward the prototypes
    m = results[10.0].metrics
    assert m is not None and set(m) == set(FedProtoClient.train_metrics) and m["proto-reg"] > 0
    assert results[10.0].train_loss == pytest.approx(m["ce-loss"] + 10 * m["proto-reg"])
    assert results[0.0].train_loss == pytest.approx(results[0.0].metrics["ce-loss"])


def test_first_round_trains_on_cross_entropy_alone():
    client = make_client()
    strategy, _ = strategy_for("tiny")
    client.receive(strategy.global_arrays, version=0)
    m = client.fit(strategy.global_arrays, version=0).metrics
    assert m["proto-reg"] == 0.0


def test_evaluation_uses_the_head_before_prototypes_then_the_nearest_prototype():
    client = make_client()
    strategy, _ = strategy_for("tiny")
    client.receive(strategy.global_arrays, version=0)
    data, layers = client.env.data, client.env.layers
    own, _ = client.evaluate(0)
    head = client.evaluate_on(data.x_test, data.y_test)
    assert (own.correct, own.loss_sum) == (head.correct, head.loss_sum)

    client.model.eval()
    with torch.no_grad():
        h = features(client.model, layers, data.to_input(data.x_test))
    rng = np.random.default_rng(0)
    protos = h.numpy()[rng.permutation(len(h))[:10]] + 0.01  # prototypes near test features
    glob = held(protos, [0, 1, 2, 3, 4, 5, 6, 7])
    client.receive(glob, version=1)
    result, _ = client.evaluate(1)
    d = ((h[:, None, :] - torch.tensor(protos)[None]) ** 2).mean(-1)
    d[:, 8:] = float("inf")
    predicted = d.argmin(1)
    assert predicted.max() <= 7
    assert result.correct == int((predicted == data.y_test).sum())
    assert np.isfinite(result.loss_sum) and result.num == len(data.y_test)


def test_the_whole_model_is_kept_and_nothing_of_it_uploaded():
    client = make_client()
    strategy, _ = strategy_for("tiny")
    client.receive(strategy.global_arrays, version=0)
    before = shared_params(client.model)
    result = client.fit(strategy.global_arrays, version=0)
    arrays, _ = client.state()
    assert {k[len("model/"):] for k in arrays} == set(client.model.state_dict())
    assert not any(k.startswith("fedproto") for k in arrays)  # prototypes come each message
    after = shared_params(client.model)
    assert any(not np.array_equal(after[k], before[k]) for k in after)  # it trained
    # a later message does not touch the model: it only takes in the prototypes
    client.receive(held(np.ones((10, 16)), [0]), version=1)
    for k, v in shared_params(client.model).items():
        np.testing.assert_array_equal(v, after[k])
    assert not set(result.upload.arrays) & set(after)


def test_two_rounds_through_the_apps(small):
    strategy, records, _ = run_local(small("strategy=fedproto"))
    glob = strategy.global_arrays
    assert set(glob) == {PROTOTYPES, PRESENT} and glob[PRESENT].all()
    classes, width = glob[PROTOTYPES].shape
    assert [r.upload_bytes for r in records] == [0] + [3 * (classes * width + classes) * 4] * 2


def test_bad_settings_are_refused():
    for value in ("-1", "inf", "nan"):
        cfg = make_config("strategy=fedproto", f"strategy.lamda={value}")
        with pytest.raises(ConfigError) as err:
            cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))
        assert err.value.setting == "strategy.lamda"
    cfg = make_config("strategy=fedproto")
    cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16))
    with pytest.raises(ConfigError, match="not one Linear head"):
        cfg.strategy.check(cfg, LayerMap(model))


# What strategy=fedproto refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"fedproto": ["strategy.lamda=-1", "strategy.lamda=inf"]}
