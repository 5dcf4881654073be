"""GPFL on a tiny client: the conditional inputs of Eq. 5 and 7 from the received GCE, the
conditional valve, the loss terms of Eq. 8-11 and their sum, evaluation on the personalized
route, the personal head and conditional inputs never leaving the client (declaration, upload,
replies through the apps) and surviving rounds, on the CNN and on a model whose head has
another name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flwr.app import MessageType
from torch import nn

from baselines.gpfl import (
    COV_PREFIX,
    GCE_PREFIX,
    GPFLClient,
    angle_loss,
    conditional_inputs,
    magnitude_loss,
)
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.protocol import keys
from flayer.protocol.aggregation import Contribution, WeightedSum
from flayer.util.errors import ConfigError
from tests.helpers import FMNIST_SPEC, client_env, make_config, server_for, tiny_client_data
from tests.helpers import TinyOutHead as Tiny
from tests.localgrid import RecordingGrid, run_local

GCE = GCE_PREFIX + "weight"
INPUTS = {"generic_input", "personal_input"}


def base_model(kind: str, cfg) -> nn.Module:
    if kind == "cnn":
        return build_model(cfg, FMNIST_SPEC)
    torch.manual_seed(0)
    return Tiny()


def setup(kind: str = "cnn", *overrides: str):
    """A client that has received a global model whose extractor, CoV and GCE differ from its
    own initial ones."""
    cfg = make_config("strategy=gpfl", "batch_size=8", "lr=0.01", *overrides)
    model = base_model(kind, cfg)
    strategy = server_for(cfg, LayerMap(model))
    rng = np.random.default_rng(1)
    glob = {k: v + rng.normal(0, 0.05, v.shape).astype(v.dtype)
            for k, v in strategy.initial_global(base_model(kind, cfg)).items()}
    env = client_env(cfg, model, tiny_client_data(n_train=16, n_test=10))
    client = GPFLClient(env, model)
    client.receive(glob, version=0)
    return client, glob


def params(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().clone().numpy() for k, v in module.named_parameters()}


def head_names(client: GPFLClient) -> set[str]:
    return set(client.env.layers.head.params)


def label_shares(client: GPFLClient) -> torch.Tensor:
    y = client.env.data.y_train.tolist()
    return torch.tensor([y.count(u) / len(y) for u in range(10)])


def batch(client: GPFLClient, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    data = client.env.data
    return data.to_input(data.x_train[:n]), data.y_train[:n]


# ---- the pieces, by hand ----------------------------------------------------------------------
def test_conditional_inputs_are_the_mean_and_the_label_weighted_mean_over_u():
    table = torch.tensor([[1.0, 2.0], [3.0, -2.0], [5.0, 6.0]])
    generic, personal = conditional_inputs(table, torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(generic, torch.tensor([3.0, 2.0]))  # Eq. 5
    torch.testing.assert_close(personal, torch.tensor([2.0, 0.0]) / 3)  # Eq. 7: / U


def test_angle_loss_is_cross_entropy_over_cosines_and_ignores_magnitude():
    f = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    table = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    y = torch.tensor([0, 1])
    cos = torch.tensor([[1.0, 0.0, -1.0], [2 ** -0.5, 2 ** -0.5, -(2 ** -0.5)]])
    expected = -(torch.log_softmax(cos, 1)[[0, 1], y]).mean()
    torch.testing.assert_close(angle_loss(f, table, y), expected)
    torch.testing.assert_close(angle_loss(5 * f, 0.1 * table, y), expected)


def test_magnitude_loss_is_the_mean_distance_per_sample():
    f = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    targets = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # distances 5 and 0: their mean, not the norm of the whole batch (which would be 5)
    assert float(magnitude_loss(f, targets)) == pytest.approx(2.5)


def test_cov_is_the_conditional_affine_valve():
    client, _ = setup("tiny")
    m = client.model
    f = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))

    def side(seq: nn.Sequential, c: torch.Tensor) -> torch.Tensor:
        linear, _, norm = seq
        return F.layer_norm(F.relu(c @ linear.weight.T + linear.bias), (16,), norm.weight,
                            norm.bias)

    c = m.personal_input
    expected = F.relu(f * (side(m.cov.gamma, c) + 1) + side(m.cov.beta, c))
    torch.testing.assert_close(m.cov(f, c), expected)
    assert not torch.allclose(m.cov(f, m.generic_input), expected)  # two routes


# ---- the client ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_receive_loads_the_shared_parts_and_sets_the_inputs_from_the_received_table(kind):
    client, glob = setup(kind)
    m = client.model
    initial = params(base_model(kind, client.cfg))
    net = params(m.net)
    for name in client.env.layers.body_params:
        np.testing.assert_array_equal(net[name], glob[name])
    for name in head_names(client):  # the server holds no head: the client keeps its own
        assert name not in glob
        np.testing.assert_array_equal(net[name], initial[name])
    for local, value in params(m.cov).items():
        np.testing.assert_array_equal(value, glob[COV_PREFIX + local])
    np.testing.assert_array_equal(params(m.gce)["weight"], glob[GCE])
    np.testing.assert_array_equal(m.gce_frozen.numpy(), glob[GCE])
    table = torch.as_tensor(glob[GCE])
    torch.testing.assert_close(m.generic_input, table.mean(0))
    torch.testing.assert_close(m.personal_input, label_shares(client) @ table / 10)


def test_evaluation_runs_the_personalized_route():
    client, _ = setup("tiny")
    m = client.model
    m.eval()
    x, _ = batch(client)
    expected = m.head(m.cov(m.features(x), m.personal_input))
    torch.testing.assert_close(m(x), expected)
    before, _ = client.evaluate(0)
    with torch.no_grad():
        m.generic_input.mul_(-3.0)
    same, _ = client.evaluate(0)
    assert (same.correct, same.loss_sum) == (before.correct, before.loss_sum)
    with torch.no_grad():
        m.personal_input.mul_(-3.0)
    other, _ = client.evaluate(0)
    assert other.loss_sum != before.loss_sum


def test_train_loss_is_the_sum_of_the_weighted_terms():
    client, glob = setup("tiny", "strategy.lam=3", "strategy.mu=0.5")
    result = client.fit(glob, version=0)
    m = result.metrics
    assert m is not None and set(m) == set(GPFLClient.train_metrics)
    assert all(m[k] > 0 for k in m)
    expected = m["ce-loss"] + m["angle-loss"] + 3 * m["magnitude-loss"] + 0.5 * m["norm-reg"]
    assert result.train_loss == pytest.approx(expected, rel=1e-6)


def test_norm_reg_is_the_cov_norm_plus_the_gce_norm():
    client, glob = setup("tiny", "strategy.mu=0.5")
    x, y = batch(client)
    cov = np.sqrt(sum(float((v ** 2).sum()) for k, v in glob.items() if k.startswith(COV_PREFIX)))
    gce = float(np.linalg.norm(glob[GCE]))
    terms = client.loss(client.model, x, y).terms
    assert float(terms["norm-reg"].detach()) == pytest.approx(cov + gce, rel=1e-5)


def test_removing_a_weighted_term_changes_the_objective_by_exactly_that_term():
    full, _ = setup("tiny", "strategy.lam=3", "strategy.mu=0.5")
    x, y = batch(full)
    with torch.no_grad():
        out = full.loss(full.model, x, y)
    cases = {("strategy.lam=0", "strategy.mu=0.5"): 3 * out.terms["magnitude-loss"],
             ("strategy.lam=3", "strategy.mu=0"): 0.5 * out.terms["norm-reg"]}
    for overrides, dropped in cases.items():
        client, _ = setup("tiny", *overrides)
        with torch.no_grad():
            less = client.loss(client.model, x, y)
        assert float(dropped) > 0
        assert float(out.total - less.total) == pytest.approx(float(dropped), rel=1e-5)


def test_each_weighted_term_changes_what_training_uploads():
    sent = {}
    for lam, mu in ((1.0, 0.0), (0.0, 0.0), (1.0, 0.5)):
        client, glob = setup("tiny", f"strategy.lam={lam}", f"strategy.mu={mu}")
        sent[lam, mu] = client.fit(glob, 0).upload.arrays
    base = sent[1.0, 0.0]
    extractor = "body.1.weight"
    assert not np.allclose(sent[0.0, 0.0][extractor], base[extractor], rtol=0, atol=1e-7)
    assert not np.allclose(sent[1.0, 0.5][GCE], base[GCE], rtol=0, atol=1e-7)


def test_each_term_reaches_what_the_paper_trains():
    """CE trains the head through the personalized route; the angle term trains the GCE table
    (the only term that does when mu = 0); the magnitude term's target is the frozen copy."""
    client, glob = setup("tiny", "strategy.lam=1", "strategy.mu=0")
    m = client.model
    m.train()
    x, y = batch(client)
    out = client.loss(m, x, y)
    out.terms["angle-loss"].backward(retain_graph=True)
    assert m.gce.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.head.parameters())  # the generic route skips the head
    m.zero_grad(set_to_none=True)
    out.terms["magnitude-loss"].backward(retain_graph=True)
    assert m.gce.weight.grad is None  # the target is the frozen table, not the trained one
    assert all(p.grad is not None for p in m.cov.parameters() if p.dim() == 2)
    m.zero_grad(set_to_none=True)
    out.terms["ce-loss"].backward()
    assert m.gce.weight.grad is None and m.head.weight.grad.abs().sum() > 0
    frozen = m.gce_frozen.clone()
    client.fit(glob, 0)
    torch.testing.assert_close(m.gce_frozen, frozen, rtol=0, atol=0)
    assert not torch.equal(m.gce.weight.detach(), frozen)


def test_everything_trains_and_the_upload_is_extractor_cov_and_gce():
    client, glob = setup()
    m = client.model
    before = {part: params(getattr(m, part)) for part in ("net", "cov", "gce")}
    result = client.fit(glob, version=0)
    assert result.num_examples == 16 and np.isfinite(result.train_loss)
    after = {part: params(getattr(m, part)) for part in before}
    for part in before:
        moved = {n for n, v in after[part].items() if not np.array_equal(v, before[part][n])}
        assert moved == set(after[part]), part
    layers = client.env.layers
    sent = result.upload.arrays
    assert set(sent) == set(glob)  # exactly what the server holds
    assert set(sent) == (set(layers.body_params) | {COV_PREFIX + k for k in after["cov"]}
                         | {GCE})
    assert result.upload.masks == {}
    for name in layers.body_params:
        np.testing.assert_array_equal(sent[name], after["net"][name])
    np.testing.assert_array_equal(sent[GCE], after["gce"]["weight"])


def test_the_personal_parts_never_travel():
    client, glob = setup("tiny")
    result = client.fit(glob, version=0)
    sent = result.upload.arrays
    assert not (head_names(client) | INPUTS) & set(sent)
    personal = [*(p.detach().numpy() for p in client.model.head.parameters()),
                client.model.personal_input.numpy(), client.model.generic_input.numpy()]
    for value in sent.values():
        assert not any(v.shape == value.shape and np.allclose(v, value) for v in personal)
    cfg = client.cfg
    spec = server_for(cfg, client.env.layers).upload_spec(glob)
    assert set(spec) == set(glob) and not head_names(client) & set(spec)


def test_kept_state_round_trips_and_survives_a_new_global_model():
    """The client keeps its head and conditional inputs (and BatchNorm statistics); restored
    from that state a client evaluates exactly as one that never stopped."""
    client, glob = setup("tiny")
    client.fit(glob, version=0)
    arrays, meta = client.state()
    stats = {f"model/net.body.2.{k}" for k in ("running_mean", "running_var",
                                               "num_batches_tracked")}
    assert set(arrays) == ({f"model/net.{n}" for n in head_names(client)}
                           | {f"model/{k}" for k in INPUTS} | stats)
    fresh, _ = setup("tiny")
    fresh.load_state(arrays, meta)
    for c in (client, fresh):  # the same global version, as the app sets a client up again
        c.reload(glob)  # the inputs stay as they were
    a, _ = client.evaluate(0)
    b, _ = fresh.evaluate(0)
    assert (a.correct, a.loss_sum) == (b.correct, b.loss_sum)
    head = params(client.model.head)
    new = {k: v + 0.01 for k, v in glob.items()}
    client.receive(new, 1)
    fresh.receive(new, 1)
    for name, value in params(client.model.head).items():
        np.testing.assert_array_equal(value, head[name])  # the trained head survives
    torch.testing.assert_close(client.model.generic_input,
                               torch.as_tensor(new[GCE]).mean(0))  # inputs from the new table
    a, _ = client.evaluate(1)
    b, _ = fresh.evaluate(1)
    assert (a.correct, a.loss_sum) == (b.correct, b.loss_sum)


# ---- the server -------------------------------------------------------------------------------
def test_strategy_holds_extractor_cov_and_gce_deterministically():
    cfg = make_config("strategy=gpfl", "seed=3")
    model = build_model(cfg, FMNIST_SPEC)
    layers = LayerMap(model)
    a = server_for(cfg, layers).initial_global(model)
    b = server_for(cfg, layers).initial_global(model)
    cov = {COV_PREFIX + f"{side}.{i}.{t}" for side in ("gamma", "beta") for i in (0, 2)
           for t in ("weight", "bias")}
    assert set(a) == set(layers.body_params) | cov | {GCE}
    assert a[GCE].shape == (10, 512) and a[COV_PREFIX + "gamma.0.weight"].shape == (512, 512)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    other = make_config("strategy=gpfl", "seed=4")
    c = server_for(other, layers).initial_global(model)
    assert not np.array_equal(a[GCE], c[GCE])


def test_strategy_averages_every_part_sample_weighted():
    cfg = make_config("strategy=gpfl")
    model = build_model(cfg, FMNIST_SPEC)
    strategy = server_for(cfg, LayerMap(model))
    glob = strategy.initial_global(model)
    ones = Contribution(10, {k: np.ones_like(v) for k, v in glob.items()})
    fours = Contribution(30, {k: np.full_like(v, 4.0) for k, v in glob.items()})
    out = strategy.aggregate_sums(WeightedSum.of([ones, fours]), glob)
    for key in ("conv1.0.weight", GCE, COV_PREFIX + "beta.2.bias"):
        np.testing.assert_allclose(out[key], 3.25)


def test_heads_and_inputs_stay_personal_through_the_apps(small):
    """Two rounds through the real apps: no message or reply carries a head or a conditional
    input; each client's stored state is its head and inputs, which training moves and a new
    global model leaves alone."""
    cfg = small("strategy=gpfl")
    grid = RecordingGrid(cfg)
    strategy, records, _ = run_local(cfg, grid=grid)
    layers = LayerMap(build_model(cfg, FMNIST_SPEC))
    kept = {f"net.{n}" for n in layers.head.params} | INPUTS  # names in the client's state
    personal = kept | set(layers.head.params)
    assert not personal & set(strategy.global_arrays)
    shared = sum(v.nbytes for v in strategy.global_arrays.values())
    assert [r.upload_bytes for r in records] == [0, 3 * shared, 3 * shared]
    w = layers.head.params[0]
    heads: dict[int, np.ndarray] = {}
    for msg, reply, stored in grid.log:
        for content in (msg.content, None if reply is None else reply.content):
            for record in ([] if content is None else content.array_records.values()):
                assert not personal & set(record.keys())
        kind = msg.metadata.message_type
        if kind == MessageType.QUERY:
            continue
        pid = grid.contexts[msg.metadata.dst_node_id].node_config[keys.NODE_PARTITION_ID]
        assert {k[len("model/"):] for k in stored} == kept  # the CNN has no buffers
        head = stored[f"model/net.{w}"]
        if pid in heads:
            moved = not np.array_equal(head, heads[pid])
            assert moved == (kind == MessageType.TRAIN)
        heads[pid] = head
    ws = list(heads.values())
    assert not any(np.allclose(ws[i], ws[j]) for i in range(3) for j in range(i + 1, 3))


# ---- settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize("override", ["strategy.lam=-1", "strategy.lam=inf", "strategy.mu=-0.1",
                                      "strategy.mu=nan"])
def test_a_bad_setting_is_refused_by_name(override):
    cfg = make_config("strategy=gpfl", override)
    with pytest.raises(ConfigError) as err:
        cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))
    assert err.value.setting == override.split("=")[0]


def test_a_head_that_is_not_linear_is_refused():
    cfg = make_config("strategy=gpfl")
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16))
    with pytest.raises(ConfigError, match="not one Linear head"):
        cfg.strategy.check(cfg, LayerMap(model))


# What strategy=gpfl refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"gpfl": ["strategy.lam=-1", "strategy.lam=inf", "strategy.mu=-0.1"]}
