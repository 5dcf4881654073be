"""pFedMe on a tiny client: the K inner steps on theta and the step on w against a hand
computation, theta's life (starts from the global model at fit, kept, evaluated), the upload
(w only), the server's beta mix, and the settings' rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.pfedme import PFedMeClient
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.nn.params import load_params, shared_params
from flayer.nn.training import batches
from flayer.protocol.aggregation import Contribution, WeightedSum
from flayer.protocol.server import MethodServer
from flayer.util.errors import ConfigError
from tests.helpers import (
    FMNIST_SPEC,
    TinyLinear,
    make_client,
    make_config,
    server_for,
    tiny_client_data,
)


def linear_client(*overrides: str, n_train: int = 16) -> PFedMeClient:
    cfg = make_config("strategy=pfedme", "batch_size=8", "lr=0.02", *overrides)
    torch.manual_seed(0)
    return make_client(PFedMeClient, cfg, model=TinyLinear(),
                       data=tiny_client_data(n_train=n_train, n_test=12))


def perturbed(arrays: dict[str, np.ndarray], seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, 0.05, v.shape).astype(v.dtype) for k, v in arrays.items()}


def by_hand(client: PFedMeClient, glob: dict[str, np.ndarray], version: int, *,
            prox: bool = True) -> tuple[dict, dict, float]:
    """theta, w and the train loss of one local epoch of pFedMe on softmax regression, in
    float64 without autograd: per batch K steps of theta <- theta - p_lr * (grad CE +
    lamda * (theta - w)) from the current theta, then w <- w - lr * lamda * (w - theta)."""
    s, data = client.settings, client.env.data
    theta = {k: v.astype(np.float64) for k, v in glob.items()}
    w = {k: v.copy() for k, v in theta.items()}
    loss_sum = 0.0
    for idx in batches(data.num_train, client.cfg.batch_size, client.generator("train", version)):
        x = data.to_input(data.x_train[idx]).flatten(1).double().numpy()
        y = data.y_train[idx].numpy()
        n = len(y)
        for step in range(s.K):
            z = x @ theta["fc.weight"].T + theta["fc.bias"]
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            if step == s.K - 1:
                loss_sum += -np.log(p[np.arange(n), y]).sum()
            p[np.arange(n), y] -= 1
            p /= n
            grad = {"fc.weight": p.T @ x, "fc.bias": p.sum(axis=0)}
            for k in theta:
                pull = s.lamda * (theta[k] - w[k]) if prox else 0.0
                theta[k] = theta[k] - s.p_learning_rate * (grad[k] + pull)
        for k in w:
            w[k] = w[k] - client.lr * s.lamda * (w[k] - theta[k])
    return theta, w, loss_sum / data.num_train


def assert_close(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=0, atol=2e-6, err_msg=k)


@pytest.mark.parametrize("overrides", [(), ("strategy.K=2", "strategy.lamda=30")])
def test_inner_steps_and_the_step_on_w_equal_a_hand_computation(overrides):
    client = linear_client(*overrides)
    g0 = shared_params(client.model)
    client.receive(g0, version=0)
    client.fit(perturbed(g0, seed=1), version=1)  # theta is now personal, not g0 or g2
    g2 = perturbed(g0, seed=2)
    result = client.fit(g2, version=2)
    theta, w, loss = by_hand(client, g2, version=2)  # from g2 again: theta is reset at fit
    assert_close(shared_params(client.model), theta)
    assert_close(result.upload.arrays, w)
    assert result.train_loss == pytest.approx(loss, rel=1e-5)
    # the proximal gradient lamda * (theta - w) is part of the steps: without it, other numbers
    free, _, _ = by_hand(client, g2, version=2, prox=False)
    assert np.abs(free["fc.weight"] - theta["fc.weight"]).max() > 1e-4


def test_k_forward_passes_per_batch_and_nothing_more():
    client = linear_client("strategy.K=3", "local_epochs=2", n_train=24)  # 3 batches of 8
    calls = []
    client.model.register_forward_hook(lambda *_: calls.append(1))
    client.fit(shared_params(client.model), version=1)
    assert len(calls) == 3 * 3 * 2


def test_theta_persists_and_is_what_evaluate_uses():
    client = linear_client()
    g0 = shared_params(client.model)
    client.receive(g0, version=0)
    up = client.fit(perturbed(g0), version=1).upload.arrays
    theta = shared_params(client.model)
    client.receive(perturbed(g0, seed=7), version=2)  # the new global model leaves theta alone
    assert_close(shared_params(client.model), theta)
    got, _ = client.evaluate(2)
    ref = TinyLinear()
    load_params(ref, theta)
    assert got == client.evaluate_on(client.env.data.x_test, client.env.data.y_test, model=ref)
    load_params(ref, up)  # w is another model, with another evaluation
    other = client.evaluate_on(client.env.data.x_test, client.env.data.y_test, model=ref)
    assert other.loss_sum != got.loss_sum
    # through the personal state, as the app stores and restores it between messages
    arrays, meta = client.state()
    fresh = linear_client()
    fresh.load_state(arrays, meta)
    fresh.receive(perturbed(g0, seed=8), version=3)
    assert_close(shared_params(fresh.model), theta)
    assert fresh.evaluate(3)[0] == got


def test_theta_starts_as_the_first_global_model_the_client_sees_and_only_then():
    client = linear_client()
    first = perturbed(shared_params(client.model), seed=4)
    client.receive(first, version=5)
    assert_close(shared_params(client.model), first)
    client.receive(perturbed(first, seed=5), version=6)
    assert_close(shared_params(client.model), first)


def test_only_w_is_uploaded_and_the_whole_theta_model_is_kept():
    cfg = make_config("strategy=pfedme", "model.name=tiny_bn", "batch_size=8")
    client = make_client(PFedMeClient, cfg)
    g0 = shared_params(client.model)
    client.receive(g0, version=0)
    up = client.fit(perturbed(g0), version=1).upload
    assert up.masks == {}
    assert set(up.arrays) == set(client.env.layers.param_names)  # no BatchNorm statistics
    theta = shared_params(client.model)
    assert not np.allclose(up.arrays["fc.weight"], theta["fc.weight"])
    arrays, _ = client.state()
    assert {k for k in arrays if k.startswith("model/")} == {
        f"model/{k}" for k in client.model.state_dict()}  # theta and its statistics
    assert not {k for k in arrays if not k.startswith("model/")}  # w is not kept


def mix_case(beta: float):
    cfg = make_config("strategy=pfedme", f"strategy.beta={beta}")
    model = build_model(cfg, FMNIST_SPEC)
    strategy = server_for(cfg, LayerMap(model))
    previous = strategy.initial_global(model)
    total = WeightedSum.of([Contribution(weight, perturbed(previous, seed))
                            for weight, seed in ((3.0, 1), (5.0, 2))])
    layers = LayerMap(model)
    fedavg = MethodServer(cfg, cfg.strategy, layers, layers.param_names).aggregate_sums(
        total, previous)
    return strategy.aggregate_sums(total, previous), previous, fedavg


def test_beta_one_is_fedavgs_mean():
    new, previous, fedavg = mix_case(1.0)
    for k in previous:
        np.testing.assert_array_equal(new[k], fedavg[k], err_msg=k)
        assert new[k].dtype == previous[k].dtype


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_beta_mixes_the_previous_model_and_the_mean(beta):
    new, previous, mean = mix_case(beta)
    for k in previous:
        expected = (1 - beta) * previous[k].astype(np.float64) + beta * mean[k]
        np.testing.assert_allclose(new[k], expected, rtol=0, atol=1e-6, err_msg=k)
        assert not np.allclose(new[k], mean[k])


def test_upload_declaration_is_every_parameter_in_full():
    cfg = make_config("strategy=pfedme")
    model = build_model(cfg, FMNIST_SPEC)
    strategy = server_for(cfg, LayerMap(model))
    spec = strategy.upload_spec(strategy.initial_global(model))
    assert set(spec) == set(LayerMap(model).param_names)
    assert all(ts.kept is None for ts in spec.values())


@pytest.mark.parametrize(("overrides", "key"), [
    (["strategy.K=0"], "strategy.K"),
    (["strategy.p_learning_rate=0"], "strategy.p_learning_rate"),
    (["strategy.p_learning_rate=nan"], "strategy.p_learning_rate"),
    (["strategy.p_learning_rate=0.2"], "strategy.p_learning_rate"),  # * lamda 15 = 3
    (["strategy.lamda=0"], "strategy.lamda"),
    (["strategy.lamda=-1"], "strategy.lamda"),
    (["lr=0.2"], "strategy.lamda"),  # lr * lamda 15 = 3
    (["strategy.beta=0"], "strategy.beta"),
    (["strategy.beta=inf"], "strategy.beta"),
])
def test_bad_settings_are_refused_naming_the_key(overrides, key):
    cfg = make_config("strategy=pfedme", *overrides)
    with pytest.raises(ConfigError) as err:
        cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))
    assert err.value.setting == key


# What strategy=pfedme refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"pfedme": ["strategy.K=0", "strategy.p_learning_rate=0", "strategy.lamda=-1",
                           "strategy.beta=0", "strategy.p_learning_rate=0.5"]}
