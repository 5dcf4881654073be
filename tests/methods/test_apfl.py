"""APFL's client on tiny data: the evaluated parameter mixture, the three simultaneous steps
(alpha's against its analytic gradient), what persists and what is uploaded."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.apfl import APFLClient
from baselines.fedavg import FedAvgClient
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.nn.params import load_params, shared_params
from flayer.nn.training import evaluate
from flayer.util.errors import ConfigError
from tests.helpers import FMNIST_SPEC, TinyLinear, make_client, make_config, server_for


def apfl(*overrides: str, model: nn.Module | None = None) -> APFLClient:
    return make_client(APFLClient, make_config("strategy=apfl", "batch_size=8", *overrides),
                       model=model)


def perturbed(arrays: dict[str, np.ndarray], seed: int, scale: float = 0.05
              ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, scale, v.shape).astype(v.dtype) for k, v in arrays.items()}


def set_state(client: APFLClient, v: dict[str, np.ndarray], w: dict[str, np.ndarray],
              alpha: float) -> None:
    load_params(client.model.v, v)
    client.receive(w, version=0)
    with torch.no_grad():
        client.model.alpha.fill_(alpha)


def softmax_grads(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of the mean cross-entropy of softmax(X W^T + b), by hand (float64)."""
    logits = X @ W.T + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    G = p / len(y)
    return G.T @ X, G.sum(axis=0)


# ---- the evaluated model ------------------------------------------------------------------------
def test_the_evaluated_model_is_exactly_the_parameter_mixture():
    client = apfl()
    init = shared_params(client.model.w)
    v, w, a = perturbed(init, 1, 0.2), perturbed(init, 2, 0.2), 0.3
    set_state(client, v, w, a)
    mixed = build_model(client.cfg, FMNIST_SPEC)
    with torch.no_grad():
        load_params(mixed, {n: (a * torch.tensor(v[n]) + (1 - a) * torch.tensor(w[n])).numpy()
                            for n in v})
    data = client.env.data
    x = data.to_input(data.x_test)
    client.model.eval()
    mixed.eval()
    with torch.no_grad():
        got, want = client.model(x), mixed(x)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        # parameters are mixed, not outputs (the CNN is not linear in its parameters)
        only_v, only_w = build_model(client.cfg, FMNIST_SPEC), build_model(client.cfg,
                                                                           FMNIST_SPEC)
        load_params(only_v, v)
        load_params(only_w, w)
        outputs_mixed = a * only_v.eval()(x) + (1 - a) * only_w.eval()(x)
        assert not torch.allclose(got, outputs_mixed, atol=1e-3)
    result, extra = client.evaluate(version=0)
    assert result == evaluate(mixed, data.x_test, data.y_test, data, device=torch.device("cpu"))
    assert extra == {"alpha": pytest.approx(a)}


def test_round_zero_evaluates_the_initial_model():
    client = apfl("strategy.alpha=0.25")
    init = shared_params(client.model.w)
    client.receive(init, version=0)
    ref = build_model(client.cfg, FMNIST_SPEC)
    data = client.env.data
    result, _ = client.evaluate(version=0)
    assert result == evaluate(ref, data.x_test, data.y_test, data, device=torch.device("cpu"))


# ---- the local steps ----------------------------------------------------------------------------
def one_step_by_hand(client: APFLClient, v, w, a: float, lr: float):
    """w, v and alpha after one step on all 40 training samples, by hand."""
    data = client.env.data
    X = data.to_input(data.x_train).flatten(1).double().numpy()
    y = data.y_train.numpy()
    Wv, bv = v["fc.weight"].astype(np.float64), v["fc.bias"].astype(np.float64)
    Ww, bw = w["fc.weight"].astype(np.float64), w["fc.bias"].astype(np.float64)
    Wm, bm = a * Wv + (1 - a) * Ww, a * bv + (1 - a) * bw
    gWm, gbm = softmax_grads(Wm, bm, X, y)
    gWw, gbw = softmax_grads(Ww, bw, X, y)
    grad_alpha = float(np.sum((Wv - Ww) * gWm) + np.sum((bv - bw) * gbm))
    return ({"fc.weight": Ww - lr * gWw, "fc.bias": bw - lr * gbw},
            {"fc.weight": Wv - lr * a * gWm, "fc.bias": bv - lr * a * gbm},
            grad_alpha)


def test_one_step_moves_w_v_and_alpha_by_their_analytic_gradients():
    lr, a = 0.1, 0.6
    client = apfl(f"lr={lr}", "batch_size=64", model=TinyLinear())  # 40 samples: one step
    init = shared_params(client.model.w)
    v, w = perturbed(init, 1), perturbed(init, 2)
    set_state(client, v, w, a)
    w_new, v_new, grad_alpha = one_step_by_hand(client, v, w, a, lr)
    assert abs(lr * grad_alpha) > 1e-3  # a step alpha visibly takes
    up = client.fit(w, version=1).upload.arrays
    for name in w_new:
        np.testing.assert_allclose(up[name], w_new[name], rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(shared_params(client.model.v)[name], v_new[name], rtol=0,
                                   atol=1e-6, err_msg=name)
    assert client.alpha == pytest.approx(a - lr * grad_alpha, abs=1e-6)


@pytest.mark.parametrize("a", [0.02, 0.98])
def test_alpha_is_clipped_to_the_unit_interval(a):
    probe = apfl("batch_size=64", model=TinyLinear())
    init = shared_params(probe.model.w)
    v, w = perturbed(init, 1), perturbed(init, 2)
    set_state(probe, v, w, a)
    _, _, grad_alpha = one_step_by_hand(probe, v, w, a, 1.0)
    lr = 2.0 / abs(grad_alpha)  # a step of 2 in alpha: out of [0, 1] either way
    client = apfl(f"lr={lr}", "batch_size=64", model=TinyLinear())
    set_state(client, v, w, a)
    client.fit(w, version=1)
    assert client.alpha == (0.0 if grad_alpha > 0 else 1.0)


def test_starting_at_alpha_one_v_trains_as_w_from_the_same_start():
    # alpha = 1: the mixed model is v and its gradient is f's; with v = w alpha's gradient is
    # 0, so v and w take the same steps on the same batches and alpha stays 1
    client = apfl()
    init = shared_params(client.model.w)
    client.receive(init, version=0)
    up = client.fit(init, version=1).upload.arrays
    assert client.alpha == 1.0
    for name, value in shared_params(client.model.v).items():
        np.testing.assert_allclose(value, up[name], rtol=0, atol=1e-6, err_msg=name)
    assert not np.allclose(up["fc.weight"], init["fc.weight"])


# ---- state and upload ---------------------------------------------------------------------------
def test_only_w_is_uploaded_and_it_is_trained_as_fedavg_trains_it():
    client = apfl("strategy.alpha=0.5")
    init = shared_params(client.model.w)
    client.receive(init, version=0)
    g1 = perturbed(init, 3)
    client.receive(g1, version=1)
    up = client.fit(g1, version=1).upload
    assert up.masks == {}
    fedavg = make_client(FedAvgClient, client.cfg)
    fedavg.receive(g1, version=1)
    expected = fedavg.fit(g1, version=1).upload.arrays
    assert set(up.arrays) == set(expected) == set(client.env.layers.param_names)
    for name in expected:
        np.testing.assert_array_equal(up.arrays[name], expected[name], err_msg=name)
    assert not np.allclose(shared_params(client.model.v)["fc.weight"], up.arrays["fc.weight"])


def test_v_and_alpha_persist_and_w_comes_from_each_global_model():
    client = apfl("strategy.alpha=0.5")
    init = shared_params(client.model.w)
    client.receive(init, version=0)
    client.fit(init, version=1)
    trained_v, trained_alpha = shared_params(client.model.v), client.alpha
    assert trained_alpha != 0.5
    arrays, meta = client.state()
    assert not any(k.startswith("model/w.") and k[len("model/w."):] in init for k in arrays)
    assert {"model/alpha"} | {f"model/v.{n}" for n in init} <= set(arrays)
    fresh = apfl("strategy.alpha=0.5")
    fresh.load_state(arrays, meta)
    g2 = perturbed(init, 4)
    fresh.receive(g2, version=2)
    assert fresh.alpha == trained_alpha
    for name, value in shared_params(fresh.model.v).items():
        np.testing.assert_array_equal(value, trained_v[name], err_msg=name)
    for name, value in shared_params(fresh.model.w).items():
        np.testing.assert_array_equal(value, g2[name], err_msg=name)


def test_each_model_keeps_its_own_batchnorm_statistics():
    client = apfl("model.name=tiny_bn", "strategy.alpha=0.5")
    init = shared_params(client.model.w)
    client.receive(init, version=0)
    client.fit(init, version=1)
    arrays, _ = client.state()
    w_mean, v_mean = arrays["model/w.body.1.running_mean"], arrays["model/v.body.1.running_mean"]
    assert np.any(w_mean != 0) and np.any(v_mean != 0) and not np.allclose(w_mean, v_mean)
    before = {k: v.copy() for k, v in arrays.items()}
    client.evaluate(version=1)
    after, _ = client.state()
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_strategy_takes_every_tensor_in_full():
    cfg = make_config("strategy=apfl")
    model = build_model(cfg, FMNIST_SPEC)
    strategy = server_for(cfg, LayerMap(model))
    spec = strategy.upload_spec(strategy.initial_global(model))
    assert set(spec) == set(LayerMap(model).param_names)
    assert all(ts.kept is None for ts in spec.values())


# ---- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan"])
def test_a_bad_alpha_is_refused_by_name(value):
    cfg = make_config("strategy=apfl", f"strategy.alpha={value}")
    with pytest.raises(ConfigError) as err:
        cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))
    assert err.value.setting == "strategy.alpha"
    assert math.isnan(err.value.value) or err.value.value == float(value)


def test_mixed_loss_gives_v_alpha_times_the_mixed_gradient():
    # the gradient w.r.t. v of f(alpha v + (1 - alpha) w) is alpha * grad f at the mixture,
    # and w gets nothing from that term
    client = apfl(model=TinyLinear())
    init = shared_params(client.model.w)
    set_state(client, perturbed(init, 1), perturbed(init, 2), 0.3)
    data = client.env.data
    x, y = data.to_input(data.x_train), data.y_train
    model = client.model
    F.cross_entropy(model.mixed(x, w_constant=True), y).backward()
    assert all(p.grad is None for p in model.w.parameters())
    mixed = TinyLinear()
    with torch.no_grad():
        for n, p in mixed.named_parameters():
            p.copy_(model.mixed_params()[n])
    F.cross_entropy(mixed(x), y).backward()
    torch.testing.assert_close(model.v.fc.weight.grad, 0.3 * mixed.fc.weight.grad)


# What strategy=apfl refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"apfl": ["strategy.alpha=-0.1", "strategy.alpha=1.5", "strategy.alpha=nan"]}
