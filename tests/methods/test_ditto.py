"""Ditto's client on a tiny client: the proximal pull, the personal model's life, the upload."""

import numpy as np
import pytest
import torch
from torch import nn

from baselines.ditto import W_BUFFER, DittoClient
from baselines.fedavg import FedAvgClient
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from flayer.nn.training import train
from tests.helpers import FMNIST_SPEC, make_config, server_for
from tests.helpers import make_client as build_client


@pytest.fixture
def tiny_bn():
    return "model.name=tiny_bn"  # tests.helpers registers TinyBN under that name


class ProximalOnly(DittoClient):
    """v's data loss without gradient: a step is the proximal term's alone."""

    def personal_loss(self, model, x, y):
        return 0.0 * model(x).sum()


def make_client(*overrides: str, cls: type = DittoClient):
    return build_client(cls, make_config("strategy=ditto", "batch_size=8", *overrides))


def perturbed(arrays: dict[str, np.ndarray], seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, 0.05, v.shape).astype(v.dtype) for k, v in arrays.items()}


def assert_params(model: nn.Module, expected: dict[str, np.ndarray], **tol) -> None:
    for name, value in shared_params(model).items():
        np.testing.assert_allclose(value, expected[name], err_msg=name, **tol)


@pytest.mark.parametrize(("lr", "lam"), [(0.5, 2.0), (0.1, 10.0), (0.005, 200.0)])
def test_one_proximal_step_with_lr_times_lambda_one_lands_on_the_received_global(lr, lam):
    # batch 64 > 40 samples and one personal epoch: exactly one SGD step on v
    client = make_client(f"lr={lr}", f"strategy.lam={lam}", "batch_size=64", cls=ProximalOnly)
    g0 = shared_params(client.model)
    client.receive(g0, version=0)
    g1 = perturbed(g0)
    client.fit(g1, version=1)
    assert_params(client.model, g1, rtol=0, atol=1e-6)
    assert not np.allclose(shared_params(client.model)["fc.weight"], g0["fc.weight"])


def test_one_proximal_step_with_lr_times_lambda_half_lands_halfway():
    client = make_client("lr=0.25", "strategy.lam=2.0", "batch_size=64", cls=ProximalOnly)
    g0 = shared_params(client.model)
    client.receive(g0, version=0)
    g1 = perturbed(g0)
    client.fit(g1, version=1)
    assert_params(client.model, {k: (g0[k] + g1[k]) / 2 for k in g0}, rtol=0, atol=1e-6)


def test_lambda_zero_trains_v_freely():
    client = make_client("strategy.lam=0.0")
    g0 = shared_params(client.model)
    client.receive(g0, version=0)
    g1 = perturbed(g0)
    client.fit(g1, version=1)
    v = shared_params(client.model)
    assert not np.allclose(v["fc.weight"], g1["fc.weight"])
    # exactly plain SGD on the cross-entropy from v's start, with v's batch order
    ref = build_model(client.cfg, FMNIST_SPEC)
    train(ref, torch.optim.SGD(ref.parameters(), lr=client.lr), client.env.data, epochs=1,
          batch_size=8, generator=client.generator("personal", 1), device=torch.device("cpu"))
    assert_params(client.model, shared_params(ref), rtol=0, atol=0)


def test_positive_lambda_pulls_v_toward_the_received_global():
    free = make_client("strategy.lam=0.0")
    pulled = make_client("strategy.lam=1.0")
    g0 = shared_params(free.model)
    g1 = perturbed(g0)
    for c in (free, pulled):
        c.receive(g0, version=0)
        c.fit(g1, version=1)

    def distance(c):
        return sum(float(np.sum((v - g1[k]) ** 2)) for k, v in shared_params(c.model).items())

    assert distance(pulled) < distance(free)


def test_upload_is_the_fedavg_trained_global_copy_not_v():
    ditto = make_client()
    g0 = shared_params(ditto.model)
    ditto.receive(g0, version=0)
    g1 = perturbed(g0)
    up = ditto.fit(g1, version=1).upload
    assert up.masks == {}
    fedavg = make_client(cls=FedAvgClient)
    fedavg.receive(g1, version=1)
    expected = fedavg.fit(g1, version=1).upload.arrays
    assert set(up.arrays) == set(expected) == set(ditto.env.layers.param_names)
    for name in expected:
        np.testing.assert_array_equal(up.arrays[name], expected[name], err_msg=name)
    assert not np.allclose(up.arrays["fc.weight"], shared_params(ditto.model)["fc.weight"])


def test_v_starts_as_the_first_global_model_and_only_then():
    client = make_client()
    g0 = perturbed(shared_params(client.model), seed=1)
    client.receive(g0, version=0)
    assert_params(client.model, g0, rtol=0, atol=0)
    client.receive(perturbed(g0, seed=2), version=1)
    assert_params(client.model, g0, rtol=0, atol=0)


def test_v_and_its_flag_survive_the_personal_state():
    client = make_client()
    g0 = shared_params(client.model)
    client.receive(g0, version=0)
    client.fit(perturbed(g0), version=1)
    arrays, meta = client.state()
    fresh = make_client()
    fresh.load_state(arrays, meta)
    fresh.receive(perturbed(g0, seed=9), version=2)  # must not reset v
    assert_params(fresh.model, shared_params(client.model), rtol=0, atol=0)


def test_global_copy_keeps_its_own_batchnorm_statistics(tiny_bn):
    client = make_client(tiny_bn)
    g0 = shared_params(client.model)
    client.receive(g0, version=0)
    client.fit(g0, version=1)
    w_keys = {k for k in client.extra if k.startswith(W_BUFFER)}
    assert w_keys == {W_BUFFER + n for n, _ in client.model.named_buffers()}
    steps = int(client.extra[W_BUFFER + "body.1.num_batches_tracked"])
    assert steps == 5  # 40 samples in batches of 8
    w_mean = client.extra[W_BUFFER + "body.1.running_mean"]
    v_mean = client.model.state_dict()["body.1.running_mean"].numpy()
    assert np.any(w_mean != 0) and not np.allclose(w_mean, v_mean)
    # the next round's w continues from the stored statistics, through the personal state
    arrays, meta = client.state()
    fresh = make_client(tiny_bn)
    fresh.load_state(arrays, meta)
    fresh.fit(g0, version=2)
    assert int(fresh.extra[W_BUFFER + "body.1.num_batches_tracked"]) == 2 * steps
    assert int(fresh.model.state_dict()["body.1.num_batches_tracked"]) == 2 * steps


def test_strategy_takes_every_tensor_in_full():
    cfg = make_config("strategy=ditto")
    model = build_model(cfg, FMNIST_SPEC)
    strategy = server_for(cfg, LayerMap(model))
    glob = strategy.initial_global(model)
    assert set(strategy.upload_spec(glob)) == set(LayerMap(model).param_names)
    assert all(ts.kept is None for ts in strategy.upload_spec(glob).values())


# What strategy=ditto refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"ditto": ["strategy.lam=-0.1", "strategy.lam=inf", "strategy.personal_epochs=0"]}
