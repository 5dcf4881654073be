"""FedPer: the server holds and receives only the body; each client's head stays its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import MessageType
from torch import nn

from baselines.fedper import FedPerClient, body_names
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from flayer.protocol import keys
from tests.helpers import FMNIST_SPEC, loop_for, make_config
from tests.helpers import make_client as build_client
from tests.localgrid import RecordingGrid, run_local


class Tiny(nn.Module):
    """A model whose layers are not named like the CNN's, with BatchNorm in its body."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16),
                                  nn.ReLU())
        self.mid = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
        self.out = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mid(self.stem(x)))


def make_model(kind: str, cfg) -> nn.Module:
    if kind == "tiny":
        torch.manual_seed(0)
        return Tiny()
    return build_model(cfg, FMNIST_SPEC)


def make_client(kind: str = "cnn", *overrides: str) -> FedPerClient:
    cfg = make_config("strategy=fedper", "batch_size=8", "lr=0.05", *overrides)
    return build_client(FedPerClient, cfg, make_model(kind, cfg))


def split(client: FedPerClient) -> tuple[set[str], set[str]]:
    body = set(client.shared)
    return body, set(client.env.layers.param_names) - body


def test_body_is_the_layer_notions_body_and_personal_layers_widen_the_head():
    layers = LayerMap(build_model(make_config("strategy=fedper"), FMNIST_SPEC))
    assert body_names(layers) == layers.body_params
    assert body_names(layers, 2) == layers.layers[0].params + layers.layers[1].params
    with pytest.raises(ValueError):
        body_names(layers, layers.num_layers)  # nothing left to share


@pytest.mark.parametrize("personal", [1, 2])
def test_strategy_holds_sends_and_declares_only_the_body(personal):
    cfg = make_config("strategy=fedper", f"strategy.personal_layers={personal}")
    model = build_model(cfg, FMNIST_SPEC)
    layers = LayerMap(model)
    loop = loop_for(cfg, model)
    sent = loop.global_arrays
    expected = [n for layer in layers.layers[:-personal] for n in layer.params]
    assert sorted(sent) == sorted(expected)
    assert not set(layers.head.params) & set(sent)
    assert sorted(loop.server.upload_spec(sent)) == sorted(expected)
    params = shared_params(model)
    for name in expected:
        np.testing.assert_array_equal(sent[name], params[name])


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_receive_loads_the_body_and_keeps_the_head(kind):
    client = make_client(kind)
    body, head = split(client)
    with torch.no_grad():  # a head of its own, unlike anything the server has
        for name, p in client.model.named_parameters():
            if name in head:
                p.add_(1.0)
    own = shared_params(client.model)
    rng = np.random.default_rng(1)
    glob = {n: v + rng.normal(0, 0.1, v.shape).astype(v.dtype)
            for n, v in own.items() if n in body}
    client.receive(glob, version=1)
    now = shared_params(client.model)
    for name in body:
        np.testing.assert_array_equal(now[name], glob[name])
    for name in head:
        np.testing.assert_array_equal(now[name], own[name])


def test_receive_refuses_a_global_model_that_carries_the_head():
    client = make_client()
    with pytest.raises(ValueError, match="does not share"):
        client.receive(shared_params(client.model), version=1)


@pytest.mark.parametrize("kind", ["cnn", "tiny"])
def test_fit_trains_the_whole_model_and_uploads_only_the_body(kind):
    client = make_client(kind)
    body, head = split(client)
    before = shared_params(client.model)
    result = client.fit({}, version=0)
    after = shared_params(client.model)
    assert set(result.upload.arrays) == body and result.upload.masks == {}
    for name in body | head:  # everything trained, the head included
        assert not np.array_equal(after[name], before[name]), name
    for name in body:  # and what goes up is the trained body
        np.testing.assert_array_equal(result.upload.arrays[name], after[name])
    assert result.num_examples == 40 and np.isfinite(result.train_loss)


def test_heads_stay_personal_across_rounds_through_the_apps(fake_fmnist, cache_dir):
    """Two rounds through the real apps; the head in each client's stored state is checked
    after every message exchange."""
    cfg = make_config(f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}", "num_clients=3",
                      "num_rounds=2", "partition.alpha=1.0", "lr=0.05", "progress=false",
                      "strategy=fedper")
    grid = RecordingGrid(cfg)
    strategy, records, _ = run_local(cfg, grid=grid)
    # (round, message kind) -> partition -> its stored parameters after that message
    snapshots: dict[tuple[int, str], dict[int, dict[str, np.ndarray]]] = {}
    for msg, _, stored in grid.log:
        kind = msg.metadata.message_type
        if kind == MessageType.QUERY:
            continue
        pid = grid.contexts[msg.metadata.dst_node_id].node_config[keys.NODE_PARTITION_ID]
        key = (int(msg.content[keys.CONFIG][keys.SERVER_ROUND]), kind)
        snapshots.setdefault(key, {})[pid] = {
            k[len("model/"):]: v for k, v in stored.items()}
    model = build_model(cfg, FMNIST_SPEC)
    layers = LayerMap(model)
    body, head = set(layers.body_params), set(layers.head.params)
    initial = shared_params(model)
    w = layers.head.params[0]  # the head's weight

    # the server never held the head, and every reply carried exactly the body
    assert set(strategy.global_arrays) == body
    body_bytes = sum(initial[n].nbytes for n in body)
    assert [r.upload_bytes for r in records] == [0, 3 * body_bytes, 3 * body_bytes]
    assert all(r.failures == 0 for r in records)

    def heads(round_: int, kind: str) -> dict[int, dict[str, np.ndarray]]:
        return {pid: {n: s[n] for n in head} for pid, s in snapshots[(round_, kind)].items()}

    # before any training, every head is the initial one
    for h in heads(0, "evaluate").values():
        for n in head:
            np.testing.assert_array_equal(h[n], initial[n])
    for r in (1, 2):
        trained, synced = heads(r, "train"), heads(r, "evaluate")
        previous = heads(r - 1, "evaluate")
        for pid, h in trained.items():
            # training moved the head away from where the round started ...
            assert not np.array_equal(h[w], previous[pid][w])
            # ... and receiving the next global body left it alone
            for n in head:
                np.testing.assert_array_equal(synced[pid][n], h[n])
        # the heads are personal: no two clients share one
        ws = [h[w] for h in trained.values()]
        assert not any(np.allclose(ws[i], ws[j]) for i in range(3) for j in range(i + 1, 3))
    # what a client keeps is its head alone: the body comes from every global model
    for snapshot in snapshots.values():
        for state in snapshot.values():
            assert set(state) == head


def test_allowed_personal_layers_pass_the_check():
    for value in (1, 3):
        cfg = make_config("strategy=fedper", f"strategy.personal_layers={value}")
        cfg.strategy.check(cfg, LayerMap(build_model(cfg, FMNIST_SPEC)))


# What strategy=fedper refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"fedper": ["strategy.personal_layers=0", "strategy.personal_layers=-1",
                           "strategy.personal_layers=4"]}
