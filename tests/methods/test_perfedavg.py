"""Per-FedAvg (FO)'s client on tiny data: the two-step update against a hand computation, the
evaluation after one adaptation step on a copy, what is kept and uploaded, the settings."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from baselines.fedavg import FedAvgClient
from baselines.perfedavg import PerFedAvgClient, halves
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from flayer.nn.training import cross_entropy, evaluate
from flayer.util.errors import ConfigError
from tests.helpers import FMNIST_SPEC, TinyLinear, make_client, make_config, server_for


def perfedavg(*overrides: str, model: nn.Module | None = None) -> PerFedAvgClient:
    return make_client(PerFedAvgClient, make_config("strategy=perfedavg", "batch_size=8",
                                                    *overrides), model=model)


def softmax_grads(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """Gradient and value of the mean cross-entropy of softmax(X W^T + b), by hand."""
    logits = X @ W.T + b
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y])))
    p[np.arange(len(y)), y] -= 1
    G = p / len(y)
    return G.T @ X, G.sum(axis=0), loss


# ---- the two-step local update ------------------------------------------------------------------
@pytest.mark.parametrize(("beta", "expected_beta"), [("0.03", 0.03), ("null", 0.1)])
def test_one_local_step_is_the_first_order_two_step_update(beta, expected_beta):
    # 40 samples, batch 20: one step takes the first 20 of the shuffled order as D, the next
    # 20 as D'
    client = perfedavg("lr=0.1", "batch_size=20", f"strategy.beta={beta}", model=TinyLinear())
    alpha = 0.1
    w = shared_params(client.model)
    client.receive(w, version=0)
    data = client.env.data
    order = torch.randperm(40, generator=client.generator("train", 1)).numpy()
    X = data.to_input(data.x_train).flatten(1).double().numpy()[order]
    y = data.y_train.numpy()[order]
    W, b = w["fc.weight"].astype(np.float64), w["fc.bias"].astype(np.float64)
    gW, gb, _ = softmax_grads(W, b, X[:20], y[:20])
    W_tmp, b_tmp = W - alpha * gW, b - alpha * gb
    gW2, gb2, loss2 = softmax_grads(W_tmp, b_tmp, X[20:], y[20:])
    expected = {"fc.weight": W - expected_beta * gW2, "fc.bias": b - expected_beta * gb2}

    result = client.fit(w, version=1)
    for name, value in expected.items():
        np.testing.assert_allclose(result.upload.arrays[name], value, rtol=0, atol=1e-6,
                                   err_msg=name)
    assert result.train_loss == pytest.approx(loss2, abs=1e-5)  # the adapted model's, on D'
    # not the plain gradient step at w, nor the temporary model
    assert not np.allclose(result.upload.arrays["fc.weight"], W - expected_beta * gW,
                           atol=1e-6)


def test_a_step_consumes_two_batches_and_the_last_batch_is_split_in_halves():
    assert halves(16) == (slice(0, 8), slice(8, 16))
    assert halves(9) == (slice(0, 5), slice(5, 9))
    assert halves(1) == (slice(0, 1), slice(0, 1))
    # 40 samples in steps of 2 x 8: steps on 16, 16 and 8 samples
    client = perfedavg()
    w = shared_params(client.model)
    client.receive(w, version=0)
    calls = []
    original = client.model.forward

    def counting(x):
        calls.append(len(x))
        return original(x)

    client.model.forward = counting
    client.fit(w, version=1)
    assert calls == [8, 8, 8, 8, 4, 4]


# ---- evaluation ---------------------------------------------------------------------------------
def adapted_by_hand(client: PerFedAvgClient, version: int) -> nn.Module:
    data = client.env.data
    idx = torch.randperm(data.num_train, generator=client.generator("perfedavg-eval", version))
    idx = idx[:client.cfg.batch_size]
    model = build_model(client.cfg, FMNIST_SPEC)
    model.load_state_dict(client.model.state_dict())
    model.train()
    loss = cross_entropy(model, data.to_input(data.x_train[idx]), data.y_train[idx])
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads, strict=True):
            p.sub_(client.lr * g)
    return model


def test_evaluation_adapts_a_copy_by_one_step_on_a_seeded_training_batch():
    client = perfedavg("model.name=tiny_bn", "lr=0.5")
    w = shared_params(client.model)
    client.receive(w, version=3)
    before, _ = client.state()
    data, cpu = client.env.data, torch.device("cpu")
    expected = evaluate(adapted_by_hand(client, 3), data.x_test, data.y_test, data, device=cpu)
    result, _ = client.evaluate(version=3)
    assert result == expected
    unadapted = evaluate(client.model, data.x_test, data.y_test, data, device=cpu)
    assert result.loss_sum != pytest.approx(unadapted.loss_sum)
    # the client's model and statistics are untouched, and the same version adapts the same way
    after, _ = client.state()
    assert set(after) == set(before) and before
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    for name, value in shared_params(client.model).items():
        np.testing.assert_array_equal(value, w[name], err_msg=name)
    assert client.evaluate(version=3)[0] == result


# ---- state, upload, server ----------------------------------------------------------------------
def test_the_meta_model_is_uploaded_whole_and_only_statistics_are_kept():
    client = perfedavg("model.name=tiny_bn")
    w = shared_params(client.model)
    client.receive(w, version=0)
    up = client.fit(w, version=1).upload
    assert set(up.arrays) == set(client.env.layers.param_names) and up.masks == {}
    for name, value in shared_params(client.model).items():
        np.testing.assert_array_equal(up.arrays[name], value, err_msg=name)
    arrays, meta = client.state()
    assert set(arrays) == {f"model/{n}" for n in client.env.layers.buffer_names}
    assert meta == {}
    # it is not FedAvg's update
    fedavg = make_client(FedAvgClient, client.cfg)
    fedavg.receive(w, version=1)
    plain = fedavg.fit(w, version=1).upload.arrays
    assert not np.allclose(up.arrays["fc.weight"], plain["fc.weight"])


def test_strategy_takes_every_tensor_in_full():
    cfg = make_config("strategy=perfedavg")
    model = build_model(cfg, FMNIST_SPEC)
    strategy = server_for(cfg, LayerMap(model))
    spec = strategy.upload_spec(strategy.initial_global(model))
    assert set(spec) == set(LayerMap(model).param_names)
    assert all(ts.kept is None for ts in spec.values())


# ---- settings -----------------------------------------------------------------------------------
def test_default_beta_is_the_runs_learning_rate():
    cfg = make_config("strategy=perfedavg")
    assert cfg.strategy.beta is None
    cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))
    assert cfg.strategy.meta_rate(cfg) == cfg.learning_rate == 0.005
    cfg = make_config("strategy=perfedavg", "lr=0.02")
    assert cfg.strategy.meta_rate(cfg) == 0.02
    cfg = make_config("strategy=perfedavg", "strategy.beta=0.001")
    assert cfg.strategy.meta_rate(cfg) == 0.001


@pytest.mark.parametrize("value", ["0", "-0.1", "inf", "nan"])
def test_a_bad_beta_is_refused_by_name(value):
    cfg = make_config("strategy=perfedavg", f"strategy.beta={value}")
    with pytest.raises(ConfigError) as err:
        cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))
    assert err.value.setting == "strategy.beta"
    assert math.isnan(err.value.value) or err.value.value == float(value)


# What strategy=perfedavg refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"perfedavg": ["strategy.beta=0", "strategy.beta=-1", "strategy.beta=inf"]}
