"""FedRep: the head phase moves only the head, the body phase only the body, in that order;
only the body is held by the server and uploaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.fedrep import FedRepClient
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from flayer.protocol import keys
from tests.helpers import FMNIST_SPEC, loop_for, make_config
from tests.helpers import make_client as build_client
from tests.localgrid import run_local
from tests.methods.test_fedper import make_model


def make_client(kind: str = "cnn", *overrides: str) -> FedRepClient:
    cfg = make_config("strategy=fedrep", "batch_size=8", "lr=0.05", *overrides)
    return build_client(FedRepClient, cfg, make_model(kind, cfg))


def split(client: FedRepClient) -> tuple[set[str], set[str]]:
    body = set(client.shared)
    return body, set(client.env.layers.param_names) - body


def assert_moved_only(before: dict, after: dict, moved: set[str], still: set[str]) -> None:
    for name in moved:
        assert not np.array_equal(after[name], before[name]), f"{name} did not move"
    for name in still:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_head_phase_moves_only_the_head(kind):
    client = make_client(kind)
    body, head = split(client)
    before = shared_params(client.model)
    stats = client.train_head(version=0)
    assert_moved_only(before, shared_params(client.model), moved=head, still=body)
    assert stats.samples == 40  # head_epochs = 1 over 40 samples
    assert all(p.requires_grad for p in client.model.parameters())  # unfrozen afterwards


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_body_phase_moves_only_the_body(kind):
    client = make_client(kind, "local_epochs=2")
    body, head = split(client)
    before = shared_params(client.model)
    stats = client.train_body(version=0)
    assert_moved_only(before, shared_params(client.model), moved=body, still=head)
    assert stats.samples == 80  # local_epochs = 2
    assert all(p.requires_grad for p in client.model.parameters())


def test_head_epochs_sets_the_length_of_the_head_phase():
    client = make_client("cnn", "strategy.head_epochs=3")
    assert client.train_head(version=0).samples == 120


def test_fit_is_the_head_phase_then_the_body_phase_with_their_own_shuffles(monkeypatch):
    client = make_client()
    purposes: list[str] = []
    original = client.generator

    def recording(purpose: str, version: int) -> torch.Generator:
        purposes.append(purpose)
        return original(purpose, version)

    monkeypatch.setattr(client, "generator", recording)
    result = client.fit({}, version=3)
    assert purposes == ["head", "body"]
    assert result.metrics is not None and np.isfinite(result.metrics["head-loss"])
    assert np.isfinite(result.train_loss) and result.num_examples == 40

    in_order = make_client()
    in_order.train_head(version=3)
    in_order.train_body(version=3)
    reversed_ = make_client()
    reversed_.train_body(version=3)
    reversed_.train_head(version=3)
    got = shared_params(client.model)
    for name, value in shared_params(in_order.model).items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    head = split(client)[1]
    assert not all(np.array_equal(got[n], shared_params(reversed_.model)[n]) for n in head)


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_fit_uploads_exactly_the_trained_body(kind):
    client = make_client(kind)
    body, _ = split(client)
    result = client.fit({}, version=0)
    assert set(result.upload.arrays) == body and result.upload.masks == {}
    after = shared_params(client.model)
    for name in body:
        np.testing.assert_array_equal(result.upload.arrays[name], after[name])


def test_strategy_holds_and_declares_only_the_body():
    cfg = make_config("strategy=fedrep")
    model = build_model(cfg, FMNIST_SPEC)
    layers = LayerMap(model)
    loop = loop_for(cfg, model)
    assert sorted(loop.global_arrays) == sorted(layers.body_params)
    assert sorted(loop.server.upload_spec(loop.global_arrays)) == sorted(layers.body_params)


def test_two_rounds_through_the_apps_upload_only_the_body(fake_fmnist, cache_dir):
    cfg = make_config(f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}", "num_clients=3",
                      "num_rounds=2", "partition.alpha=1.0", "lr=0.05", "progress=false",
                      "strategy=fedrep")
    strategy, records, grid = run_local(cfg)
    model = build_model(cfg, FMNIST_SPEC)
    layers = LayerMap(model)
    body_bytes = sum(shared_params(model)[n].nbytes for n in layers.body_params)
    assert [r.upload_bytes for r in records] == [0, 3 * body_bytes, 3 * body_bytes]
    assert all(r.failures == 0 for r in records) and strategy.version == 2
    w = f"model/{layers.head.params[0]}"
    heads = [ctx.state[keys.STATE_ARRAYS][w].numpy() for ctx in grid.contexts.values()]
    assert not any(np.allclose(heads[i], heads[j]) for i in range(3) for j in range(i + 1, 3))


# What strategy=fedrep refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"fedrep": ["strategy.head_epochs=0", "strategy.head_epochs=-2",
                           "strategy.personal_layers=0", "strategy.personal_layers=4"]}
