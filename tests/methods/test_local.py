"""Local training: the client keeps and trains its own whole model, takes nothing from the
server and uploads nothing (0 bytes); rounds still count and evaluate; a client's model depends
on its own data alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from flwr.app import MessageType

from baselines.local import LocalClient
from flayer.apps import client_work
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.nn.params import shared_params
from flayer.nn.training import train
from flayer.protocol import keys
from flayer.protocol.aggregation import WeightedSum
from flayer.protocol.upload import Upload
from tests.helpers import FMNIST_SPEC, accepted, make_client, make_config, server_for
from tests.localgrid import RecordingGrid, run_local


def local_client() -> LocalClient:
    return make_client(LocalClient, make_config("strategy=local", "batch_size=8"))


def test_the_client_trains_its_own_model_and_uploads_nothing():
    client = local_client()
    start = shared_params(client.model)
    result = client.fit({}, version=0)
    assert result.upload.arrays == {} and result.upload.masks == {}
    assert result.num_examples == 40 and np.isfinite(result.train_loss)
    # exactly plain SGD on its own data from where it stood
    ref = build_model(client.cfg, FMNIST_SPEC)
    train(ref, torch.optim.SGD(ref.parameters(), lr=client.lr), client.env.data, epochs=1,
          batch_size=8, generator=client.generator("train", 0), device=torch.device("cpu"))
    for name, value in shared_params(client.model).items():
        np.testing.assert_array_equal(value, shared_params(ref)[name], err_msg=name)
    assert not np.array_equal(shared_params(client.model)["fc.weight"], start["fc.weight"])


def test_the_whole_model_is_kept_and_nothing_received_changes_it():
    client = local_client()
    client.fit({}, version=0)
    own = {k: v.clone() for k, v in client.model.state_dict().items()}
    assert client.kept() == set(own)
    client.receive({}, version=1)
    client.reload({})
    strange = {n: np.full_like(v, 7.0) for n, v in shared_params(client.model).items()}
    with pytest.raises(ValueError, match="does not share"):  # a server sending a model
        client.receive(strange, version=2)
    for k, v in client.model.state_dict().items():
        torch.testing.assert_close(v, own[k], rtol=0, atol=0)
    # the state holds the whole model and restores it
    arrays, meta = client.state()
    assert {k[len("model/"):] for k in arrays} == set(own)
    fresh = local_client()
    fresh.load_state(arrays, meta)
    for k, v in fresh.model.state_dict().items():
        torch.testing.assert_close(v, own[k], rtol=0, atol=0)


def test_an_empty_upload_passes_the_check_and_counts_zero_bytes():
    contribution, nbytes = accepted(Upload(arrays={}), {}, weight=40.0)
    assert nbytes == 0 and dict(contribution.arrays) == {}
    total = WeightedSum.of([contribution])
    assert total.num == {}


def test_the_server_holds_nothing_and_expects_nothing():
    cfg = make_config("strategy=local")
    model = build_model(cfg, FMNIST_SPEC)
    strategy = server_for(cfg, LayerMap(model))
    assert strategy.initial_global(model) == {}
    assert strategy.upload_spec({}) == {}
    assert strategy.aggregate_sums(WeightedSum(), {}) == {}


def evals(records) -> list[list[tuple]]:
    return [[(c.partition_id, c.correct, c.num_test, c.loss, c.extra.get(keys.STATE_HASH))
             for c in r.clients] for r in records]


def test_rounds_count_and_evaluate_with_zero_upload_bytes(small):
    cfg = small("strategy=local")
    strategy, records, grid = run_local(cfg, grid=RecordingGrid(cfg))
    assert [r.round for r in records] == [0, 1, 2]
    assert [r.model_version for r in records] == [0, 1, 2] and strategy.version == 2
    assert [r.trained for r in records] == [0, 3, 3]
    assert all(r.upload_bytes == 0 and r.failures == 0 for r in records)
    assert all(len(r.clients) == 3 for r in records)
    assert strategy.global_arrays == {}
    # every client kept its own model, and the three models differ
    hashes = {c.extra[keys.STATE_HASH] for c in records[-1].clients}
    assert len(hashes) == 3
    # no message carries an array either way
    work = [(m, r) for m, r, _ in grid.log
            if m.metadata.message_type in (MessageType.TRAIN, MessageType.EVALUATE)]
    assert {m.metadata.message_type for m, _ in work} == {MessageType.TRAIN, MessageType.EVALUATE}
    for msg, reply in work:
        assert len(msg.content[keys.ARRAYS]) == 0
        assert all(len(rec) == 0 for rec in reply.content.array_records.values())


def test_a_clients_model_depends_on_its_own_data_alone(small, monkeypatch):
    cfg = small("strategy=local")
    _, plain, plain_grid = run_local(cfg)
    real = client_work.load_client

    def other_data_for_client_1(cfg, partition_id, val_fraction=0.0):
        data = real(cfg, partition_id, val_fraction)
        if partition_id != 1:
            return data
        return dataclasses.replace(data, y_train=(data.y_train + 1) % 10)

    monkeypatch.setattr(client_work, "load_client", other_data_for_client_1)
    _, changed, changed_grid = run_local(cfg)

    def of(records, pid):
        return [[e for e in r if e[0] == pid] for r in evals(records)]

    for pid in (0, 2):
        assert of(changed, pid) == of(plain, pid)
        a = plain_grid.contexts[1000 + pid].state[keys.STATE_ARRAYS]
        b = changed_grid.contexts[1000 + pid].state[keys.STATE_ARRAYS]
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=k)
    assert of(changed, 1)[1:] != of(plain, 1)[1:]  # the changed client itself did change
