"""FedRoD: the balanced softmax on the client's class counts, the output as the sum of the
generic and personal logits, which loss reaches which parameters (one local step checked
against the two separate steps of the reference procedure), the personal head kept and never
uploaded, on the CNN and on a model whose head has another name."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.fedrod import (
    FedRoDClient,
    balanced_softmax_loss,
    log_class_counts,
)
from flayer.nn.layers import LayerMap, features
from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from flayer.protocol.aggregation import Contribution, WeightedSum
from flayer.util.errors import ConfigError
from tests.helpers import FMNIST_SPEC, client_env, make_config, server_for, tiny_client_data
from tests.helpers import TinyOutHead as Tiny


def base_model(kind: str, cfg) -> nn.Module:
    if kind == "cnn":
        return build_model(cfg, FMNIST_SPEC)
    torch.manual_seed(0)
    return Tiny()


def make_client(kind: str = "cnn", *overrides: str, n_train: int = 16) -> FedRoDClient:
    cfg = make_config("strategy=fedrod", "batch_size=8", "lr=0.05", *overrides)
    model = base_model(kind, cfg)
    return FedRoDClient(client_env(cfg, model, tiny_client_data(n_train=n_train, n_test=10)),
                        model)


def perturbed(arrays: dict[str, np.ndarray], seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, 0.05, v.shape).astype(v.dtype) for k, v in arrays.items()}


def params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_balanced_softmax_is_cross_entropy_of_logits_plus_log_counts():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    counts = torch.tensor([3, 1, 0])  # class 2 absent from the client's data
    log_counts = log_class_counts(torch.tensor([0, 0, 1, 0]), 3)
    torch.testing.assert_close(log_counts, counts.float().log())
    loss = balanced_softmax_loss(logits, y, log_counts)
    # by hand: p(y | x) = n_y e^{z_y} / sum_c n_c e^{z_c}; the absent class drops out
    z = logits.detach().numpy()
    expected = -np.mean([math.log(3 * math.exp(z[0, 0]) / (3 * math.exp(z[0, 0])
                                                            + math.exp(z[0, 1]))),
                         math.log(math.exp(z[1, 1]) / (3 * math.exp(z[1, 0])
                                                       + math.exp(z[1, 1])))])
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[:, 2] == 0)  # an absent class gets no gradient
    plain = F.cross_entropy(logits.detach(), y)
    assert float(loss.detach()) != pytest.approx(float(plain))  # the counts change the loss


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_output_is_generic_plus_personal_logits(kind):
    client = make_client(kind)
    m = client.model
    with torch.no_grad():
        m.personal.weight.normal_()  # a personal head unlike the generic one
    x = client.env.data.to_input(client.env.data.x_test[:4])
    m.eval()
    layers = client.env.layers
    h = features(m.net, layers, x)
    expected = layers.head_module(m.net)(h) + m.personal(h)
    torch.testing.assert_close(m(x), expected)
    assert not torch.allclose(m(x), m.net(x))


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_each_loss_reaches_only_its_own_parameters(kind):
    client = make_client(kind)
    m = client.model
    m.train()
    data = client.env.data
    x, y = data.to_input(data.x_train[:8]), data.y_train[:8]
    log_counts = log_class_counts(data.y_train, data.num_classes)

    terms = client.loss(m, x, y, log_counts).terms
    terms["personal-loss"].backward(retain_graph=True)
    assert all(p.grad is None for p in m.net.parameters())  # no gradient to body or head
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.personal.parameters())

    m.zero_grad(set_to_none=True)
    terms["bsm-loss"].backward()
    assert all(p.grad is None for p in m.personal.parameters())
    assert all(p.grad is not None for p in m.net.parameters())
    head = client.env.layers.head_module(m.net)
    assert head.weight.grad.abs().sum() > 0  # the generic head learns from the BSM


def test_one_local_step_is_the_reference_two_step_update():
    """Batch >= data: one step. It must equal a BSM step of the body and generic head, then a
    personal-CE step of the personal head on the same forward pass (detached feature and
    generic logits), with plain SGD at the run's rate."""
    client = make_client("tiny", "batch_size=64", "lr=0.1")
    m = client.model
    with torch.no_grad():
        m.personal.weight.mul_(0.5)
    before_net, before_personal = params(m.net), params(m.personal)
    glob = shared_params(m.net)
    result = client.fit(glob, version=0)

    ref = base_model("tiny", client.cfg)  # the client's starting model
    personal = nn.Linear(16, 10)
    personal.load_state_dict(before_personal)
    data = client.env.data
    x, y = data.to_input(data.x_train), data.y_train
    ref.train()
    h = ref.body(x)
    generic = ref.out(h)
    counts = torch.bincount(y, minlength=10).float()
    bsm = F.cross_entropy(generic + counts.log(), y)
    net_grads = torch.autograd.grad(bsm, list(ref.parameters()))
    ce = F.cross_entropy(generic.detach() + personal(h.detach()), y)
    personal_grads = torch.autograd.grad(ce, list(personal.parameters()))
    with torch.no_grad():
        for (name, p), g in zip(m.net.named_parameters(), net_grads, strict=True):
            torch.testing.assert_close(p, before_net[name] - 0.1 * g, msg=name)
        for (name, p), g in zip(m.personal.named_parameters(), personal_grads, strict=True):
            torch.testing.assert_close(p, before_personal[name] - 0.1 * g, msg=name)
    assert result.train_loss == pytest.approx(float(bsm.detach()), rel=1e-5)
    assert result.metrics == {"personal-loss": pytest.approx(float(ce.detach()), rel=1e-5)}


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_receive_loads_the_generic_model_and_keeps_the_personal_head(kind):
    client = make_client(kind)
    with torch.no_grad():
        client.model.personal.bias.add_(1.0)
    personal = params(client.model.personal)
    glob = perturbed(shared_params(client.model.net))
    client.receive(glob, version=1)
    for name, value in shared_params(client.model.net).items():
        np.testing.assert_array_equal(value, glob[name])
    for name, value in params(client.model.personal).items():
        torch.testing.assert_close(value, personal[name], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_the_personal_head_learns_and_never_travels(kind):
    client = make_client(kind)
    glob = shared_params(client.model.net)
    client.receive(glob, version=0)
    before = params(client.model.personal)
    result = client.fit(glob, version=0)
    after = params(client.model.personal)
    assert all(not torch.equal(after[n], before[n]) for n in after)  # it trained
    sent = result.upload.arrays
    layers = client.env.layers
    assert set(sent) == set(layers.param_names) and result.upload.masks == {}
    for name, value in shared_params(client.model.net).items():
        np.testing.assert_array_equal(sent[name], value)  # the trained generic model
    personal = [v.numpy() for v in after.values()]
    assert not any(v.shape == p.shape and np.allclose(v, p)
                   for v in sent.values() for p in personal)
    arrays, _ = client.state()
    kept = {k[len("model/"):] for k in arrays}
    assert kept == {"personal.weight", "personal.bias"} | client.buffers()
    assert result.num_examples == 16 and np.isfinite(result.train_loss)


def test_kept_state_restores_the_same_client():
    client = make_client()
    glob = shared_params(client.model.net)
    client.receive(glob, version=0)
    client.fit(glob, version=0)
    arrays, meta = client.state()
    fresh = make_client()
    fresh.load_state(arrays, meta)
    new = perturbed(glob, seed=3)
    client.receive(new, 1)
    fresh.receive(new, 1)
    a, _ = client.evaluate(1)
    b, _ = fresh.evaluate(1)
    assert (a.correct, a.loss_sum) == (b.correct, b.loss_sum)


def test_server_averages_the_base_model_sample_weighted():
    cfg = make_config("strategy=fedrod")
    model = build_model(cfg, FMNIST_SPEC)
    strategy = server_for(cfg, LayerMap(model))
    glob = strategy.initial_global(model)
    assert set(glob) == set(LayerMap(model).param_names)  # body and generic head
    ones = Contribution(10, {k: np.ones_like(v) for k, v in glob.items()})
    fours = Contribution(30, {k: np.full_like(v, 4.0) for k, v in glob.items()})
    out = strategy.aggregate_sums(WeightedSum.of([ones, fours]), glob)
    np.testing.assert_allclose(out["fc.weight"], 3.25)


def test_a_head_that_is_not_linear_is_refused():
    cfg = make_config("strategy=fedrod")
    cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))  # the CNN passes
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16))
    with pytest.raises(ConfigError, match="not one Linear head"):
        cfg.strategy.check(cfg, LayerMap(model))
