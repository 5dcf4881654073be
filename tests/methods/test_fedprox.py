"""FedProx: the proximal gradient mu * (w - w_global) is exactly the gradient of the paper's
proximal loss, pulls the local model toward the received global one, and with mu = 0 the run
is FedAvg's to the bit; the whole model is uploaded and averaged as FedAvg does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from baselines.fedprox import FedProxClient
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from flayer.nn.training import cross_entropy, proximal_pull, train
from flayer.util.errors import ConfigError
from tests.helpers import FMNIST_SPEC, make_client, make_config, server_for
from tests.localgrid import run_local


def prox_client(*overrides: str) -> FedProxClient:
    return make_client(FedProxClient, make_config("strategy=fedprox", "batch_size=8",
                                                  *overrides))


def perturbed(arrays: dict[str, np.ndarray], seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, 0.05, v.shape).astype(v.dtype) for k, v in arrays.items()}


def test_the_hook_adds_mu_times_the_distance_to_each_gradient():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    w = {n: p.detach().clone() for n, p in model.named_parameters()}
    anchor = {n: (v + 0.5).numpy() for n, v in w.items()}
    model.weight.grad = torch.full_like(model.weight, 0.25)  # the bias has no gradient
    proximal_pull(model, anchor, 0.1, torch.device("cpu"))(0, 0)
    torch.testing.assert_close(model.weight.grad, torch.full_like(model.weight, 0.25 - 0.05))
    torch.testing.assert_close(model.bias.grad, torch.full_like(model.bias, -0.05))
    # so one SGD step is w - lr * (g + mu * (w - w_global))
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    torch.testing.assert_close(model.weight.detach(), w["weight"] - 0.5 * (0.25 - 0.05))
    torch.testing.assert_close(model.bias.detach(), w["bias"] + 0.5 * 0.05)


def test_local_training_minimizes_the_papers_proximal_objective():
    """A fit equals SGD on CE + mu/2 ||w - w_global||^2 differentiated by autograd."""
    client = prox_client("strategy.mu=0.5", "lr=0.05")
    g = perturbed(shared_params(client.model))
    client.receive(g, version=1)
    client.fit(g, version=1)
    ref = build_model(client.cfg, FMNIST_SPEC)
    ref.load_state_dict({k: torch.as_tensor(v) for k, v in g.items()})
    anchor = {k: torch.as_tensor(v) for k, v in g.items()}

    def proximal_loss(model, x, y):
        prox = sum(((p - anchor[n]) ** 2).sum() for n, p in model.named_parameters())
        return cross_entropy(model, x, y) + 0.5 / 2 * prox

    train(ref, torch.optim.SGD(ref.parameters(), lr=0.05), client.env.data, epochs=1,
          batch_size=8, generator=client.generator("train", 1), device=torch.device("cpu"),
          loss_fn=proximal_loss)
    for name, value in shared_params(ref).items():
        np.testing.assert_allclose(shared_params(client.model)[name], value, rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_a_positive_mu_pulls_the_local_model_toward_the_global_one():
    ends = {}
    for mu in (0.0, 5.0):
        client = prox_client(f"strategy.mu={mu}", "lr=0.05")
        g = shared_params(client.model)
        client.receive(g, version=1)
        client.fit(g, version=1)
        ends[mu] = sum(float(np.sum((v - g[k]) ** 2))
                       for k, v in shared_params(client.model).items())
    assert 0 < ends[5.0] < ends[0.0]


def test_the_whole_model_is_uploaded_and_only_buffers_kept():
    client = prox_client()
    g = shared_params(client.model)
    client.receive(g, version=1)
    result = client.fit(g, version=1)
    assert set(result.upload.arrays) == set(client.env.layers.param_names)
    assert result.upload.masks == {} and result.num_examples == 40
    for name, value in shared_params(client.model).items():
        np.testing.assert_array_equal(result.upload.arrays[name], value)
    assert client.kept() == client.buffers()
    cfg = make_config("strategy=fedprox")
    model = build_model(cfg, FMNIST_SPEC)
    spec = server_for(cfg, LayerMap(model)).upload_spec(shared_params(model))
    assert set(spec) == set(LayerMap(model).param_names)
    assert all(ts.kept is None for ts in spec.values())


def outcome(records) -> list[tuple]:
    return [(r.round, r.model_version, r.trained, r.failures, r.upload_bytes, r.train_loss,
             dict(r.train_metrics),
             [(c.partition_id, c.correct, c.num_test, c.loss, c.auc, c.extra)
              for c in r.clients]) for r in records]


def test_mu_zero_is_fedavg_to_the_bit(small):
    fedavg, a, _ = run_local(small("strategy=fedavg", "join_ratio=0.67"))
    fedprox, b, _ = run_local(small("strategy=fedprox", "strategy.mu=0.0", "join_ratio=0.67"))
    assert outcome(a) == outcome(b)
    assert set(fedavg.global_arrays) == set(fedprox.global_arrays)
    for name, value in fedavg.global_arrays.items():
        assert value.tobytes() == fedprox.global_arrays[name].tobytes(), name


@pytest.mark.parametrize("mu", [-0.1, float("nan"), float("inf")])
def test_bad_mu_is_a_config_error(mu):
    cfg = make_config("strategy=fedprox", f"strategy.mu={mu}")
    with pytest.raises(ConfigError, match="strategy.mu"):
        cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))


# What strategy=fedprox refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"fedprox": ["strategy.mu=-0.1", "strategy.mu=inf"]}
