"""SCAFFOLD: the corrected local step y - lr (g - c_i + c), the option II control update, the
server's update of x (by server_lr) and of c (the plain sum of Delta c_i over N), what is kept
and what travels; with zero control variates round 1 is FedAvg's, and c stays the mean of all
clients' c_i."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from baselines.scaffold import (
    CLIENT_C,
    CONTROL,
    DELTA_C,
    ScaffoldClient,
    corrected_gradient,
    option_two,
)
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from flayer.nn.training import cross_entropy
from flayer.protocol import keys
from flayer.protocol.aggregation import Contribution, WeightedSum
from flayer.util.errors import ConfigError
from tests.helpers import FMNIST_SPEC, accepted, loop_for, make_client, make_config
from tests.localgrid import run_local


def scaffold_client(*overrides: str) -> ScaffoldClient:
    return make_client(ScaffoldClient, make_config("strategy=scaffold", "batch_size=8",
                                                   *overrides))


def with_control(x: dict[str, np.ndarray], c: dict[str, np.ndarray] | None = None
                 ) -> dict[str, np.ndarray]:
    c = c if c is not None else {n: np.zeros_like(v) for n, v in x.items()}
    return {**x, **{CONTROL + n: v for n, v in c.items()}}


def noise(x: dict[str, np.ndarray], scale: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.normal(0, scale, v.shape).astype(np.float32) for n, v in x.items()}


# ---- the client's math on tiny tensors --------------------------------------------------------
def test_a_step_is_y_minus_lr_times_the_corrected_gradient():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    y = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.randn(2, 3)
    c = {"weight": torch.randn(2, 3), "bias": torch.randn(2)}
    c_i = {"weight": torch.randn(2, 3), "bias": torch.randn(2)}
    model.weight.grad = g.clone()  # the bias has no gradient: its step is the correction's
    hook, steps = corrected_gradient(model, {n: c[n] - c_i[n] for n in c})
    hook(0, 0)
    torch.optim.SGD(model.parameters(), lr=0.3).step()
    torch.testing.assert_close(model.weight.detach(), y["weight"] - 0.3 * (g - c_i["weight"]
                                                                          + c["weight"]))
    torch.testing.assert_close(model.bias.detach(), y["bias"] - 0.3 * (c["bias"] - c_i["bias"]))
    assert steps == [1]


def test_option_two_control_update():
    c_i, c = np.array([0.5, -1.0], np.float32), np.array([0.25, 2.0], np.float32)
    x, y = np.array([1.0, 1.0], np.float32), np.array([0.9, 1.2], np.float32)
    new = option_two(c_i, c, x, y, steps=4, lr=0.05)
    np.testing.assert_allclose(new, c_i - c + (x - y) / (4 * 0.05), rtol=1e-6)
    np.testing.assert_allclose(new, [0.5 - 0.25 + 0.5, -1.0 - 2.0 - 1.0], rtol=1e-6)


def test_one_step_makes_c_i_the_gradient_at_x():
    """With K = 1 (one batch holds every sample), y = x - lr (g(x) - c_i + c), so option II
    gives c_i+ = g(x): the corrected step and the control update together, on the CNN."""
    client = scaffold_client("batch_size=64", "lr=0.1")
    x = shared_params(client.model)
    c, c_i = noise(x, 0.02, 1), noise(x, 0.02, 2)
    client.extra = {CLIENT_C + n: v for n, v in c_i.items()}
    glob = with_control(x, c)
    client.receive(glob, version=1)
    result = client.fit(glob, version=1)
    # g(x): the full-batch cross-entropy gradient at x
    ref = build_model(client.cfg, FMNIST_SPEC)
    data = client.env.data
    cross_entropy(ref, data.to_input(data.x_train), data.y_train).backward()
    grad = {n: p.grad.numpy() for n, p in ref.named_parameters()}
    y = shared_params(client.model)
    for n in x:
        np.testing.assert_allclose(y[n], x[n] - 0.1 * (grad[n] - c_i[n] + c[n]), rtol=1e-4,
                                   atol=1e-6, err_msg=n)
        np.testing.assert_allclose(client.extra[CLIENT_C + n], grad[n], rtol=1e-3, atol=1e-4,
                                   err_msg=n)
        # uploaded: y itself and (c_i+ - c_i) / n
        np.testing.assert_array_equal(result.upload.arrays[n], y[n])
        np.testing.assert_allclose(result.upload.arrays[DELTA_C + n] * 40,
                                   client.extra[CLIENT_C + n] - c_i[n], rtol=1e-5, atol=1e-7)


def test_k_counts_every_local_step():
    """Without a data gradient each step moves y by -lr (c - c_i), so after K steps option II
    gives c_i+ = c_i - c + (c - c_i) = 0 exactly when K is every step taken: here two epochs
    of five batches (dividing by one epoch's batches would leave c - c_i)."""
    client = scaffold_client("local_epochs=2", "lr=0.01")
    x = shared_params(client.model)
    c, c_i = noise(x, 0.1, 1), noise(x, 0.1, 2)
    client.extra = {CLIENT_C + n: v for n, v in c_i.items()}
    plain = client.train_model

    def without_data_gradient(model, optimizer, version, **kwargs):
        return plain(model, optimizer, version, loss_fn=lambda m, x, y: 0.0 * m(x).sum(),
                     **kwargs)

    client.train_model = without_data_gradient
    client.fit(with_control(x, c), version=1)
    for n in x:
        np.testing.assert_allclose(client.extra[CLIENT_C + n], 0, atol=1e-4, err_msg=n)
        assert not np.allclose(c[n] - c_i[n], 0, atol=1e-4)


def test_c_i_starts_at_zero_and_survives_the_state():
    client = scaffold_client()
    assert all(not v.any() for v in client.own_control().values())
    x = shared_params(client.model)
    glob = with_control(x)
    client.receive(glob, version=1)
    client.fit(glob, version=1)
    arrays, meta = client.state()
    assert {k for k in arrays if k.startswith(CLIENT_C)} == {CLIENT_C + n for n in x}
    assert not any(k.startswith("model/") for k in arrays)  # the CNN has no buffers
    fresh = scaffold_client()
    fresh.load_state(arrays, meta)
    for n, v in fresh.own_control().items():
        np.testing.assert_array_equal(v, client.extra[CLIENT_C + n])
        assert v.any()


def test_the_evaluated_model_is_the_received_global_one():
    client = scaffold_client()
    x = noise(shared_params(client.model), 0.1, 5)
    client.receive(with_control(x, noise(x, 1.0, 6)), version=2)
    for n, v in shared_params(client.model).items():
        np.testing.assert_array_equal(v, x[n])


# ---- the server ----------------------------------------------------------------------------
@pytest.fixture
def strategy_of():
    def make(*overrides: str):
        cfg = make_config("strategy=scaffold", "num_clients=4", *overrides)
        model = build_model(cfg, FMNIST_SPEC)
        s = loop_for(cfg, model)
        return s
    return make


def test_the_server_holds_c_and_never_asks_for_it(strategy_of):
    s = strategy_of()
    names = LayerMap(build_model(s.cfg, FMNIST_SPEC)).param_names
    assert set(s.global_arrays) == set(names) | {CONTROL + n for n in names}
    assert all(not s.global_arrays[CONTROL + n].any() for n in names)
    spec = s.server.upload_spec(s.global_arrays)
    assert set(spec) == set(names) | {DELTA_C + n for n in names}
    assert all(ts.kept is None and ts.shape == s.global_arrays[n.removeprefix(DELTA_C)].shape
               for n, ts in spec.items())


@pytest.mark.parametrize("server_lr", [1.0, 0.5, 2.0])
def test_server_update_of_x_and_c(strategy_of, server_lr):
    s = strategy_of(f"strategy.server_lr={server_lr}")
    x = {n: v for n, v in s.global_arrays.items() if not n.startswith(CONTROL)}
    c = noise(x, 0.1, 1)
    previous = with_control(x, c)
    ys = [noise(x, 0.1, 2), noise(x, 0.1, 3)]
    dcs = [noise(x, 0.1, 4), noise(x, 0.1, 5)]
    ns = [10, 30]
    total = WeightedSum()
    for y, dc, n in zip(ys, dcs, ns, strict=True):
        upload = {**y, **{DELTA_C + k: v / np.float32(n) for k, v in dc.items()}}
        total.add(Contribution(float(n), upload))
    out = s.server.aggregate_sums(total, previous)
    assert set(out) == set(previous)
    for k in x:
        mean = (10 * ys[0][k].astype(np.float64) + 30 * ys[1][k]) / 40
        np.testing.assert_allclose(out[k], x[k] + server_lr * (mean - x[k]), rtol=1e-5,
                                   atol=1e-7, err_msg=k)
        np.testing.assert_allclose(out[CONTROL + k], c[k] + (dcs[0][k] + dcs[1][k]) / 4,
                                   rtol=1e-5, atol=1e-7, err_msg=k)
        assert out[k].dtype == out[CONTROL + k].dtype == np.float32


def test_server_lr_one_is_fedavgs_mean_to_the_bit(strategy_of):
    s = strategy_of()
    x = {n: v for n, v in s.global_arrays.items() if not n.startswith(CONTROL)}
    previous = with_control(x)
    total = WeightedSum()
    for seed, n in ((2, 7), (3, 19)):
        y = noise(x, 0.1, seed)
        total.add(Contribution(float(n), {**y, **{DELTA_C + k: np.zeros_like(v)
                                                  for k, v in y.items()}}))
    fedavg = total.mean(x)
    out = s.server.aggregate_sums(total, previous)
    for k in x:
        assert out[k].tobytes() == fedavg[k].tobytes(), k


def test_the_upload_passes_the_servers_check(strategy_of):
    s = strategy_of()
    client = scaffold_client()
    client.receive(s.global_arrays, version=0)
    result = client.fit(s.global_arrays, version=0)
    contribution, nbytes = accepted(result.upload, s.server.upload_spec(s.global_arrays), 40.0)
    assert nbytes == 2 * sum(v.nbytes for v in shared_params(client.model).values())


# ---- whole runs -------------------------------------------------------------------------------
def test_round_1_with_zero_controls_is_fedavgs_round_1(small):
    fedavg, a, _ = run_local(small("strategy=fedavg", "num_rounds=1"))
    scaffold, b, grid = run_local(small("strategy=scaffold", "num_rounds=1"))
    for name, value in fedavg.global_arrays.items():
        assert value.tobytes() == scaffold.global_arrays[name].tobytes(), name
    assert a[1].train_loss == b[1].train_loss
    assert ([(c.partition_id, c.correct, c.loss) for c in a[1].clients]
            == [(c.partition_id, c.correct, c.loss) for c in b[1].clients])
    assert b[1].upload_bytes == 2 * a[1].upload_bytes  # the model and Delta c_i
    assert any(v.any() for k, v in scaffold.global_arrays.items() if k.startswith(CONTROL))


def test_c_stays_the_mean_of_all_clients_c_i(small):
    cfg = small("strategy=scaffold", "num_rounds=3", "join_ratio=0.67", "strategy.server_lr=0.8")
    strategy, records, grid = run_local(cfg)
    assert [r.trained for r in records] == [0, 2, 2, 2]
    states = [ctx.state[keys.STATE_ARRAYS] for ctx in grid.contexts.values()]
    for name in LayerMap(build_model(cfg, FMNIST_SPEC)).param_names:
        own = [st[CLIENT_C + name].numpy() if CLIENT_C + name in st else 0.0 for st in states]
        mean = sum(own) / cfg.num_clients
        np.testing.assert_allclose(strategy.global_arrays[CONTROL + name], mean, rtol=1e-4,
                                   atol=1e-6, err_msg=name)
        assert strategy.global_arrays[CONTROL + name].any()


# ---- settings -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_server_lr_is_a_config_error(value):
    cfg = make_config("strategy=scaffold", f"strategy.server_lr={value}")
    with pytest.raises(ConfigError, match="strategy.server_lr"):
        cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))


# What strategy=scaffold refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"scaffold": ["strategy.server_lr=0", "strategy.server_lr=-1",
                             "strategy.server_lr=inf"]}
