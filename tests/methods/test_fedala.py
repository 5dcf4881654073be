"""FedALA's client on a tiny client: when ALA runs, what it mixes, how long it learns W."""

import logging

import numpy as np
import torch
import torch.nn.functional as F

from baselines.fedala import PASSES, STARTED, WEIGHT, FedAlaClient
from flayer.nn.models import build_model
from flayer.nn.params import load_params, shared_params
from tests.helpers import FMNIST_SPEC, make_config, server_for
from tests.helpers import make_client as build_client


def make_client(*overrides: str) -> FedAlaClient:
    return build_client(FedAlaClient, make_config("strategy=fedala", "batch_size=8", *overrides))


def perturbed(arrays: dict[str, np.ndarray], seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, 0.05, v.shape).astype(v.dtype) for k, v in arrays.items()}


def joined(*overrides: str) -> tuple[FedAlaClient, dict[str, np.ndarray]]:
    """A client after its first participation and one round of training (local != global)."""
    client = make_client(*overrides)
    g0 = shared_params(client.model)
    client.receive(g0, version=0)
    client.fit(g0, version=0)
    return client, perturbed(g0)


def weights(client: FedAlaClient) -> dict[str, np.ndarray]:
    return {k[len(WEIGHT):]: v for k, v in client.extra.items() if k.startswith(WEIGHT)}


def test_first_participation_skips_ala_and_takes_the_global_model():
    client = make_client()
    glob = perturbed(shared_params(client.model))
    client.receive(glob, version=0)
    for name, value in shared_params(client.model).items():
        np.testing.assert_array_equal(value, glob[name], err_msg=name)
    assert weights(client) == {} and client.meta[PASSES] == 0
    assert not client.meta.get(STARTED, False)


def test_lower_tensors_take_the_global_and_top_p_mix_by_w():
    client, g1 = joined("strategy.max_start_passes=3")
    local = shared_params(client.model)
    client.receive(g1, version=1)
    after = shared_params(client.model)
    top = client.env.layers.top_p(2)
    assert top == ("fc.weight", "fc.bias")
    w = weights(client)
    assert set(w) == set(top)
    for name in client.env.layers.param_names:
        if name in top:
            expected = local[name] + (g1[name] - local[name]) * w[name]
            np.testing.assert_allclose(after[name], expected, rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(after[name], g1[name], err_msg=name)
    assert any(np.any(v < 1) for v in w.values())  # W learned something


def test_p_selects_how_many_top_tensors_are_mixed():
    client, g1 = joined("strategy.P=3", "strategy.max_start_passes=1")
    client.receive(g1, version=1)
    assert set(weights(client)) == {"fc1.0.bias", "fc.weight", "fc.bias"}
    np.testing.assert_array_equal(shared_params(client.model)["fc1.0.weight"],
                                  g1["fc1.0.weight"])


def test_w_stays_in_the_unit_interval_under_a_large_rate():
    client, g1 = joined("strategy.eta_w=1000", "strategy.max_start_passes=3")
    client.receive(g1, version=1)
    client.receive(perturbed(g1, seed=4), version=2)
    for name, w in weights(client).items():
        assert w.min() >= 0 and w.max() <= 1, name
    flat = np.concatenate([w.ravel() for w in weights(client).values()])
    assert np.any(flat == 0) and np.any(flat == 1)  # the clip is what kept it there


def test_one_pass_follows_the_gradient_of_the_mixed_model():
    # all the data in one batch, one pass: W = clip(1 - eta * dL/dtheta * (global - local))
    client, g1 = joined("strategy.rand_percent=100", "batch_size=64",
                        "strategy.max_start_passes=1", "strategy.eta_w=0.5")
    local = shared_params(client.model)
    client.receive(g1, version=1)
    assert client.meta[PASSES] == 1
    ref = build_model(client.cfg, FMNIST_SPEC)
    top = ("fc.weight", "fc.bias")
    load_params(ref, {k: (local[k] + (g1[k] - local[k]) * 1.0 if k in top else g1[k])
                      for k in g1})
    data = client.env.data
    F.cross_entropy(ref(data.to_input(data.x_train)), data.y_train).backward()
    grads = dict(ref.named_parameters())
    after = shared_params(client.model)
    for name in top:
        diff = g1[name] - local[name]
        w = np.clip(1 - 0.5 * grads[name].grad.numpy() * diff, 0, 1)
        np.testing.assert_allclose(weights(client)[name], w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(after[name], local[name] + diff * w, rtol=1e-5, atol=1e-6)


def test_start_phase_stops_at_its_cap_and_says_so(caplog):
    client, g1 = joined("strategy.threshold=1e-12", "strategy.max_start_passes=3")
    with caplog.at_level(logging.WARNING, logger="baselines.fedala"):
        client.receive(g1, version=1)
    assert client.meta[PASSES] == 3 and client.meta[STARTED]
    assert any("cap of 3 passes" in r.getMessage() for r in caplog.records)


def test_start_phase_stops_on_its_threshold(caplog):
    client, g1 = joined("strategy.threshold=1e9", "strategy.num_pre_loss=4")
    with caplog.at_level(logging.WARNING, logger="baselines.fedala"):
        client.receive(g1, version=1)
    assert client.meta[PASSES] == 4  # as soon as num_pre_loss losses exist
    assert not any("cap" in r.getMessage() for r in caplog.records)


def test_later_participations_take_one_pass_and_state_carries_w():
    client, g1 = joined("strategy.max_start_passes=2")
    client.receive(g1, version=1)
    assert client.meta[PASSES] == 2
    arrays, meta = client.state()
    fresh = make_client("strategy.max_start_passes=2")
    fresh.load_state(arrays, meta)
    for name, w in weights(client).items():
        np.testing.assert_array_equal(weights(fresh)[name], w)
    fresh.receive(perturbed(g1, seed=5), version=2)
    assert fresh.meta[PASSES] == 1


def test_ala_leaves_batchnorm_statistics_alone():
    client, g1 = joined("model.name=tiny_bn", "strategy.max_start_passes=2")
    before = {k: v.clone() for k, v in client.model.named_buffers()}
    assert int(before["body.1.num_batches_tracked"]) == 5
    client.receive(g1, version=1)
    assert client.meta[PASSES] == 2
    for name, buf in client.model.named_buffers():
        assert torch.equal(buf, before[name]), name
    assert set(weights(client)) == {"fc.weight", "fc.bias"}


def test_fit_uploads_the_whole_model_and_every_client_syncs():
    client = make_client()
    g0 = shared_params(client.model)
    client.receive(g0, version=0)
    result = client.fit(g0, version=0)
    assert set(result.upload.arrays) == set(client.env.layers.param_names)
    assert result.upload.masks == {}
    cfg = client.cfg
    strategy = server_for(cfg, client.env.layers)
    assert strategy.sync_every_round()
    assert set(strategy.upload_spec(g0)) == set(g0)


# What strategy=fedala refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"fedala": ["strategy.eta_w=0", "strategy.eta_w=-1", "strategy.rand_percent=0",
                           "strategy.rand_percent=101", "strategy.P=0", "strategy.P=9",
                           "strategy.threshold=0", "strategy.num_pre_loss=1",
                           "strategy.max_start_passes=0"]}
