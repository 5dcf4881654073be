"""LG-FedAvg: the server holds, receives and averages only the top (global) layers; each
client's lower layers never leave it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.fedper import body_names
from baselines.lgfedavg import LGFedAvgClient, global_names
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from flayer.protocol import keys
from flayer.protocol.aggregation import Contribution, WeightedSum
from flayer.util.errors import ConfigError
from tests.helpers import FMNIST_SPEC, loop_for, make_config, server_for
from tests.helpers import make_client as build_client
from tests.localgrid import run_local
from tests.methods.test_fedper import make_model


def make_client(kind: str = "cnn", *overrides: str) -> LGFedAvgClient:
    cfg = make_config("strategy=lgfedavg", "batch_size=8", "lr=0.05", *overrides)
    return build_client(LGFedAvgClient, cfg, make_model(kind, cfg))


def split(client: LGFedAvgClient) -> tuple[set[str], set[str]]:
    """(local lower layers, global top layers)"""
    shared = set(client.shared)
    return set(client.env.layers.param_names) - shared, shared


def test_global_layers_are_the_top_layers_fedper_keeps():
    layers = LayerMap(build_model(make_config("strategy=lgfedavg"), FMNIST_SPEC))
    assert global_names(layers) == layers.head.params
    assert global_names(layers, 2) == layers.layers[-2].params + layers.head.params
    for k in (1, 2, 3):  # exactly the complement of FedPer's body
        assert set(global_names(layers, k)) | set(body_names(layers, k)) == set(
            layers.param_names)
        assert not set(global_names(layers, k)) & set(body_names(layers, k))


@pytest.mark.parametrize("top", [1, 2])
def test_strategy_holds_sends_and_declares_only_the_global_layers(top):
    cfg = make_config("strategy=lgfedavg", f"strategy.global_layers={top}")
    model = build_model(cfg, FMNIST_SPEC)
    layers = LayerMap(model)
    loop = loop_for(cfg, model)
    sent = loop.global_arrays
    expected = [n for layer in layers.layers[-top:] for n in layer.params]
    assert sorted(sent) == sorted(expected)
    assert not set(layers.layers[0].params) & set(sent)  # the lowest layer never
    assert sorted(loop.server.upload_spec(sent)) == sorted(expected)
    params = shared_params(model)
    for name in expected:
        np.testing.assert_array_equal(sent[name], params[name])


def test_server_takes_the_sample_weighted_mean_of_the_heads():
    cfg = make_config("strategy=lgfedavg")
    model = build_model(cfg, FMNIST_SPEC)
    strategy = server_for(cfg, LayerMap(model))
    held = strategy.initial_global(model)
    ones = Contribution(10, {k: np.ones_like(v) for k, v in held.items()})
    fours = Contribution(30, {k: np.full_like(v, 4.0) for k, v in held.items()})
    out = strategy.aggregate_sums(WeightedSum.of([ones, fours]), held)
    assert set(out) == set(held)
    for value in out.values():
        np.testing.assert_allclose(value, 3.25)


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_receive_loads_the_head_and_keeps_the_own_body(kind):
    client = make_client(kind)
    local, shared = split(client)
    with torch.no_grad():  # a body of its own, unlike anything the server has
        for name, p in client.model.named_parameters():
            if name in local:
                p.add_(1.0)
    own = shared_params(client.model)
    rng = np.random.default_rng(1)
    glob = {n: v + rng.normal(0, 0.1, v.shape).astype(v.dtype)
            for n, v in own.items() if n in shared}
    client.receive(glob, version=1)
    now = shared_params(client.model)
    for name in shared:
        np.testing.assert_array_equal(now[name], glob[name])
    for name in local:
        np.testing.assert_array_equal(now[name], own[name])


def test_receive_refuses_a_global_model_that_carries_the_body():
    client = make_client()
    with pytest.raises(ValueError, match="does not share"):
        client.receive(shared_params(client.model), version=1)


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_fit_trains_the_whole_model_and_uploads_only_the_head(kind):
    client = make_client(kind)
    local, shared = split(client)
    before = shared_params(client.model)
    result = client.fit({}, version=0)
    after = shared_params(client.model)
    assert set(result.upload.arrays) == shared and result.upload.masks == {}
    for name in local | shared:  # everything trained, the body included
        assert not np.array_equal(after[name], before[name]), name
    for name in shared:  # and what goes up is the trained head
        np.testing.assert_array_equal(result.upload.arrays[name], after[name])
    assert result.num_examples == 40 and np.isfinite(result.train_loss)


def test_the_client_keeps_its_body_and_batchnorm_statistics_not_the_head():
    client = make_client("tiny")  # BatchNorm in the body
    client.fit({}, version=0)
    arrays, meta = client.state()
    local, shared = split(client)
    buffers = {n for n, _ in client.model.named_buffers()}
    assert set(arrays) == {f"model/{n}" for n in local | buffers}
    assert meta == {}
    # a fresh client restored from that state and given a head has the trained body
    fresh = make_client("tiny")
    fresh.load_state(arrays, meta)
    trained = shared_params(client.model)
    fresh.receive({n: trained[n] for n in shared}, version=1)
    for name, value in shared_params(fresh.model).items():
        np.testing.assert_array_equal(value, trained[name], err_msg=name)


def test_two_rounds_through_the_apps_keep_every_body_at_home(small):
    strategy, records, grid = run_local(small("strategy=lgfedavg"))
    model = build_model(strategy.cfg, FMNIST_SPEC)
    layers = LayerMap(model)
    head_bytes = sum(shared_params(model)[n].nbytes for n in layers.head.params)
    assert [r.upload_bytes for r in records] == [0, 3 * head_bytes, 3 * head_bytes]
    assert all(r.failures == 0 for r in records) and strategy.version == 2
    assert set(strategy.global_arrays) == set(layers.head.params)
    stored = [ctx.state[keys.STATE_ARRAYS] for ctx in grid.contexts.values()]
    for state in stored:  # every client stores its body and nothing of the head
        assert set(state) == {f"model/{n}" for n in layers.body_params}
    w = f"model/{layers.body_params[0]}"
    bodies = [s[w].numpy() for s in stored]
    assert not any(np.allclose(bodies[i], bodies[j]) for i in range(3) for j in range(i + 1, 3))


@pytest.mark.parametrize("bad", [0, 4, -1])
def test_global_layers_out_of_range_is_a_config_error(bad):
    cfg = make_config("strategy=lgfedavg", f"strategy.global_layers={bad}")
    with pytest.raises(ConfigError, match="strategy.global_layers"):
        cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))


def test_allowed_global_layers_pass_the_check():
    for value in (1, 3):
        cfg = make_config("strategy=lgfedavg", f"strategy.global_layers={value}")
        cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))


# What strategy=lgfedavg refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"lgfedavg": ["strategy.global_layers=0", "strategy.global_layers=4",
                             "strategy.global_layers=-1"]}
