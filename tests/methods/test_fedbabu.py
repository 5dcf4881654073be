"""FedBABU: only the body trains, travels and is averaged; the head stays the initial one; each
evaluation fine-tunes a copy of the head (body frozen) and leaves the client's state alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.fedbabu import FedBABUClient
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from flayer.nn.training import only_trainable
from flayer.util.errors import ConfigError
from tests.helpers import FMNIST_SPEC, loop_for, make_config, tiny_client_data
from tests.helpers import make_client as build_client
from tests.localgrid import run_local
from tests.methods.test_fedper import make_model


def make_client(kind: str = "cnn", *overrides: str, n_train: int = 40) -> FedBABUClient:
    cfg = make_config("strategy=fedbabu", "batch_size=8", "lr=0.05", *overrides)
    return build_client(FedBABUClient, cfg, make_model(kind, cfg),
                        data=tiny_client_data(n_train=n_train))


def split(client: FedBABUClient) -> tuple[set[str], set[str]]:
    body = set(client.shared)
    return body, set(client.env.layers.param_names) - body


def full_state(client: FedBABUClient) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in client.model.state_dict().items()}


def assert_same_state(client: FedBABUClient, before: dict[str, torch.Tensor]) -> None:
    for k, v in client.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)


def head_loss(client: FedBABUClient, head: nn.Module) -> float:
    """Cross-entropy of a head on the client's training features (body frozen, eval mode)."""
    with torch.no_grad():
        return float(F.cross_entropy(head(client.train_features()), client.env.data.y_train))


# ---- federated training ----------------------------------------------------------------------
def test_strategy_holds_sends_and_declares_only_the_body():
    cfg = make_config("strategy=fedbabu")
    model = build_model(cfg, FMNIST_SPEC)
    layers = LayerMap(model)
    loop = loop_for(cfg, model)
    sent = loop.global_arrays
    assert sorted(sent) == sorted(layers.body_params)
    assert sorted(loop.server.upload_spec(sent)) == sorted(layers.body_params)
    params = shared_params(model)
    for name in layers.body_params:
        np.testing.assert_array_equal(sent[name], params[name])


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_fit_trains_only_the_body_and_uploads_only_the_body(kind):
    client = make_client(kind, "local_epochs=2")
    body, head = split(client)
    before = shared_params(client.model)
    result = client.fit({}, version=0)
    after = shared_params(client.model)
    for name in body:
        assert not np.array_equal(after[name], before[name]), f"{name} did not move"
    for name in head:  # bit for bit the initial head
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert set(result.upload.arrays) == body and result.upload.masks == {}
    for name in body:
        np.testing.assert_array_equal(result.upload.arrays[name], after[name])
    assert result.num_examples == 40 and np.isfinite(result.train_loss)
    assert all(p.requires_grad for p in client.model.parameters())  # unfrozen afterwards


def test_receive_loads_the_body_and_refuses_a_head():
    client = make_client()
    body, head = split(client)
    initial = shared_params(client.model)
    glob = {n: v + 0.5 for n, v in initial.items() if n in body}
    client.receive(glob, version=1)
    now = shared_params(client.model)
    for name in body:
        np.testing.assert_array_equal(now[name], glob[name])
    for name in head:
        np.testing.assert_array_equal(now[name], initial[name])
    with pytest.raises(ValueError, match="does not share"):
        client.receive(initial, version=2)


def test_the_client_keeps_only_batchnorm_statistics():
    client = make_client("tiny")  # BatchNorm in the body
    client.fit({}, version=0)
    arrays, meta = client.state()
    assert set(arrays) == {f"model/{n}" for n, _ in client.model.named_buffers()}
    assert meta == {}
    cnn = make_client()
    cnn.fit({}, version=0)
    assert cnn.state() == ({}, {})


def test_two_rounds_through_the_apps_upload_only_the_body(small):
    strategy, records, grid = run_local(small("strategy=fedbabu", "strategy.fine_tuning_epochs=2"))
    model = build_model(strategy.cfg, FMNIST_SPEC)
    layers = LayerMap(model)
    body_bytes = sum(shared_params(model)[n].nbytes for n in layers.body_params)
    assert [r.upload_bytes for r in records] == [0, 3 * body_bytes, 3 * body_bytes]
    assert all(r.failures == 0 for r in records) and strategy.version == 2
    assert set(strategy.global_arrays) == set(layers.body_params)


# ---- evaluation: fine-tuning a copy of the head ----------------------------------------------
@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_evaluation_fine_tunes_a_copy_and_leaves_the_state_alone(kind):
    client = make_client(kind)
    client.fit({}, version=0)  # trained body (and BatchNorm statistics for tiny)
    before = full_state(client)
    stored = client.state()
    tuned, _ = client.evaluate(version=1)
    assert_same_state(client, before)  # parameters and BatchNorm statistics alike
    after = client.state()
    assert set(after[0]) == set(stored[0]) and after[1] == stored[1]
    for k, v in stored[0].items():
        np.testing.assert_array_equal(after[0][k], v)
    raw = client.evaluate_on(client.env.data.x_test, client.env.data.y_test)
    assert tuned.loss_sum != raw.loss_sum  # the evaluated model is not the stored one
    assert (tuned.num, raw.num) == (20, 20)


def test_zero_fine_tuning_epochs_evaluates_the_model_as_trained():
    client = make_client("cnn", "strategy.fine_tuning_epochs=0")
    client.fit({}, version=0)
    got, extra = client.evaluate(version=1)
    raw = client.evaluate_on(client.env.data.x_test, client.env.data.y_test)
    assert got == raw and extra == {}


def test_fine_tuning_improves_the_heads_fit_on_the_clients_data():
    client = make_client("cnn", "strategy.fine_tuning_epochs=10")
    client.fit({}, version=0)
    initial_head = client.env.layers.head_module(client.model)
    tuned, stats = client.fine_tuned_head(version=1)
    assert stats.samples == 10 * 40  # ten epochs over the 40 training samples
    assert tuned is not initial_head
    one_epoch = make_client("cnn", "strategy.fine_tuning_epochs=1")
    one_epoch.fit({}, version=0)
    short, _ = one_epoch.fine_tuned_head(version=1)
    # random labels on 40 samples: the fit improves, and more with more epochs
    initial, after_one, after_ten = (head_loss(client, h) for h in (initial_head, short, tuned))
    assert after_ten < after_one < initial and after_ten < initial - 0.05


def test_fine_tuning_on_features_equals_fine_tuning_the_head_through_the_frozen_model():
    # The CNN's body has no BatchNorm or dropout: features computed once are exactly what the
    # head sees when the whole model runs with the body frozen, batch for batch.
    client = make_client("cnn", "strategy.fine_tuning_epochs=3", "batch_size=6")
    client.fit({}, version=0)
    tuned, _ = client.fine_tuned_head(version=4)
    head = set(client.env.layers.head.params)
    with only_trainable(client.model, head) as trainable:
        optimizer = torch.optim.SGD(trainable.values(), lr=client.lr)
        client.train_model(client.model, optimizer, 4, purpose="fine-tune", epochs=3)
    reference = client.env.layers.head_module(client.model)
    for (name, p), q in zip(tuned.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_fine_tuning_epochs_and_the_seeded_shuffle_set_the_head():
    client = make_client("cnn", "strategy.fine_tuning_epochs=2")
    a, _ = client.fine_tuned_head(version=3)
    b, _ = client.fine_tuned_head(version=3)
    c, _ = client.fine_tuned_head(version=5)  # another version, another shuffle
    longer = make_client("cnn", "strategy.fine_tuning_epochs=4")
    d, stats = longer.fine_tuned_head(version=3)
    assert stats.samples == 4 * 40
    w = [m.weight.detach() for m in (a, b, c, d)]
    assert torch.equal(w[0], w[1])
    assert not torch.allclose(w[0], w[2]) and not torch.allclose(w[0], w[3])


def test_batchnorm_statistics_stay_fixed_while_the_head_is_fine_tuned():
    client = make_client("tiny", "strategy.fine_tuning_epochs=3")
    client.fit({}, version=0)
    before = full_state(client)
    tuned, _ = client.fine_tuned_head(version=1)
    assert_same_state(client, before)
    initial = client.env.layers.head_module(client.model)
    assert not torch.allclose(tuned.weight, initial.weight)


# ---- settings --------------------------------------------------------------------------------
def test_negative_fine_tuning_epochs_is_a_config_error():
    cfg = make_config("strategy=fedbabu", "strategy.fine_tuning_epochs=-1")
    with pytest.raises(ConfigError, match="strategy.fine_tuning_epochs"):
        cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))


def test_a_model_without_a_linear_head_is_a_config_error():
    class NormLast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.norm = nn.LayerNorm(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.fc(x))

    cfg = make_config("strategy=fedbabu")
    with pytest.raises(ConfigError, match="model.name"):
        cfg.strategy.check(cfg, LayerMap(NormLast()))


def test_the_summary_shows_the_fine_tuning_epochs():
    cfg = make_config("strategy=fedbabu", "strategy.fine_tuning_epochs=3")
    assert cfg.strategy.summary_fields() == {"fine_tuning_epochs": 3}


# What strategy=fedbabu refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"fedbabu": ["strategy.fine_tuning_epochs=-1"]}
