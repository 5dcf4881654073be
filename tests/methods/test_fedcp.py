"""FedCP on a tiny client: the CPN learns, the global head and extractor copy stay frozen, the
personal head and context never leave the client, the uploaded head is the mean of both heads,
on the CNN and on a model whose head has another name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from baselines.fedcp import CPN_PREFIX, FedCPClient, mmd
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from tests.helpers import FMNIST_SPEC, client_env, make_config, server_for, tiny_client_data
from tests.helpers import TinyOutHead as Tiny


def base_model(kind: str, cfg) -> nn.Module:
    if kind == "cnn":
        return build_model(cfg, FMNIST_SPEC)
    torch.manual_seed(0)
    return Tiny()


def setup(kind: str = "cnn", *overrides: str):
    """A client that has received a global model whose head and CPN differ from its own."""
    cfg = make_config("strategy=fedcp", "batch_size=8", "lr=0.01", *overrides)
    model = base_model(kind, cfg)
    layers = LayerMap(model)
    strategy = server_for(cfg, layers)
    rng = np.random.default_rng(1)
    glob = {k: v + rng.normal(0, 0.05, v.shape).astype(v.dtype)
            for k, v in strategy.initial_global(base_model(kind, cfg)).items()}
    data = tiny_client_data(n_train=16, n_test=10)
    env = client_env(cfg, model, data)
    client = FedCPClient(env, model)
    client.receive(glob, version=0)
    return client, glob


def params(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().clone().numpy() for k, v in module.named_parameters()}


def head_names(client: FedCPClient) -> dict[str, str]:
    head = client.env.layers.head
    return {n: n[len(head.name) + 1:] for n in head.params}


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_receive_loads_shared_parts_and_keeps_the_personal_head(kind):
    client, glob = setup(kind)
    m = client.model
    personal = params(m.personal_head)
    initial = params(base_model(kind, client.cfg))
    for name, local in head_names(client).items():
        np.testing.assert_array_equal(personal[local], initial[name])  # not the global head
        np.testing.assert_array_equal(params(m.global_head)[local], glob[name])
    net = params(m.net)
    frozen = params(m.global_body)
    for name in client.env.layers.body_params:
        np.testing.assert_array_equal(net[name], glob[name])
        np.testing.assert_array_equal(frozen[name], glob[name])
    for local, value in params(m.cpn).items():
        np.testing.assert_array_equal(value, glob[CPN_PREFIX + local])
    expected = m.personal_head.weight.detach().sum(0)
    torch.testing.assert_close(m.context, expected)


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_cpn_gets_gradients_and_the_global_parts_stay_frozen(kind):
    client, glob = setup(kind)
    m = client.model
    m.train()
    x = client.env.data.to_input(client.env.data.x_train[:8])
    y = client.env.data.y_train[:8]
    m.noise = client.generator("test", 0)
    client.loss(m, x, y).total.backward()
    m.noise = None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.cpn.parameters())
    assert all(p.grad is None for p in (*m.global_head.parameters(),
                                        *m.global_body.parameters()))

    m.zero_grad(set_to_none=True)
    before = {part: params(getattr(m, part)) for part in ("cpn", "global_head", "global_body",
                                                          "net")}
    result = client.fit(glob, version=0)
    assert result.num_examples == 16 and np.isfinite(result.train_loss)
    after = {part: params(getattr(m, part)) for part in before}
    for part in ("global_head", "global_body"):
        for name, value in after[part].items():
            np.testing.assert_array_equal(value, before[part][name], err_msg=name)
    moved = {part: {n for n, v in after[part].items() if not np.array_equal(v, before[part][n])}
             for part in ("cpn", "net")}
    assert moved["cpn"] == set(after["cpn"])  # every CPN tensor learned
    head = {f"{client.env.layers.head.name}.{local}" for local in head_names(client).values()}
    assert head <= moved["net"] and moved["net"] - head  # personal head and extractor learned


def test_train_loss_is_cross_entropy_plus_lambda_times_mmd():
    client, glob = setup("tiny", "strategy.lam=3")
    result = client.fit(glob, version=0)
    m = result.metrics
    assert m is not None and set(m) == set(FedCPClient.train_metrics)
    assert m["mmd"] > 0  # the extractor moved away from the frozen global one
    assert result.train_loss == pytest.approx(m["ce-loss"] + 3 * m["mmd"])


def test_upload_is_extractor_cpn_and_the_mean_of_both_heads():
    client, glob = setup()
    result = client.fit(glob, version=0)
    m = client.model
    sent = result.upload.arrays
    layers = client.env.layers
    cpn_keys = {CPN_PREFIX + k for k, _ in m.cpn.named_parameters()}
    assert set(sent) == set(layers.body_params) | set(layers.head.params) | cpn_keys
    assert set(sent) == set(glob)  # exactly what the server holds
    assert result.upload.masks == {}
    personal = params(m.personal_head)
    for name, local in head_names(client).items():
        np.testing.assert_allclose(sent[name], 0.5 * (personal[local] + glob[name]), atol=1e-7)
        assert not np.allclose(sent[name], personal[local])  # the personal head is never sent
    net = params(m.net)
    for name in layers.body_params:
        np.testing.assert_array_equal(sent[name], net[name])


def test_kept_state_round_trips_and_evaluation_is_reproducible():
    """The client keeps its personal head and context; with the next global model a client
    restored from that state evaluates exactly as one that never stopped."""
    client, glob = setup()
    client.fit(glob, version=0)
    arrays, meta = client.state()
    head = {f"model/net.{n}" for n in client.env.layers.head.params}
    assert set(arrays) == head | {"model/context"}  # no extractor, global head or CPN
    fresh, _ = setup()
    fresh.load_state(arrays, meta)
    new = {k: v + 0.01 for k, v in glob.items()}
    client.receive(new, 1)
    fresh.receive(new, 1)
    a, _ = client.evaluate(1)
    b, _ = fresh.evaluate(1)
    assert (a.correct, a.loss_sum) == (b.correct, b.loss_sum)
    for name, value in params(client.model).items():
        np.testing.assert_array_equal(value, params(fresh.model)[name])


def test_mmd_is_zero_for_the_same_sample_and_grows_with_a_shift():
    x = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    assert float(mmd(x, x)) == pytest.approx(0.0, abs=1e-6)
    small, large = float(mmd(x, x + 0.5)), float(mmd(x, x + 3.0))
    assert 0 < small < large


def test_policy_is_a_per_sample_split_that_the_context_conditions():
    client, _ = setup()
    m = client.model
    h = torch.rand(5, m.context.numel())
    personal, shared = m.policy(h)
    assert personal.shape == shared.shape == h.shape
    before = shared.detach().clone()
    m.context.mul_(-1.0)
    assert not torch.allclose(m.policy(h)[1], before)


def test_strategy_holds_model_and_cpn_deterministically():
    cfg = make_config("strategy=fedcp", "seed=3")
    model = build_model(cfg, FMNIST_SPEC)
    a = server_for(cfg, LayerMap(model)).initial_global(model)
    b = server_for(cfg, LayerMap(model)).initial_global(model)
    width = LayerMap(model).feature_width(model)
    assert set(a) == set(shared_params(model)) | {CPN_PREFIX + k for k in
                                                  ("0.weight", "0.bias", "1.weight", "1.bias")}
    assert a[CPN_PREFIX + "0.weight"].shape == (2 * width, width)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_strategy_averages_the_uploaded_heads_sample_weighted():
    from flayer.protocol.aggregation import Contribution, WeightedSum

    cfg = make_config("strategy=fedcp")
    model = build_model(cfg, FMNIST_SPEC)
    strategy = server_for(cfg, LayerMap(model))
    glob = strategy.initial_global(model)
    spec = strategy.upload_spec(glob)
    assert set(spec) == set(glob)
    ones = Contribution(10, {k: np.ones_like(v) for k, v in glob.items()})
    fours = Contribution(30, {k: np.full_like(v, 4.0) for k, v in glob.items()})
    out = strategy.aggregate_sums(WeightedSum.of([ones, fours]), glob)
    np.testing.assert_allclose(out["fc.weight"], 3.25)
    np.testing.assert_allclose(out[CPN_PREFIX + "0.weight"], 3.25)


# What strategy=fedcp refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"fedcp": ["strategy.lam=-1", "strategy.tau=0"]}
