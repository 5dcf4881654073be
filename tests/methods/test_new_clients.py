"""Clients never seen in training (`new_clients`): every method evaluates its new clients as
clients that arrive late, through the apps; a new client is never trained, synced or stored;
what arriving late means for a few methods; the same numbers whatever serves the clients."""

from __future__ import annotations

import importlib
import math
import re

import numpy as np
import pytest
import torch
from flwr.app import MessageType

from baselines.fedbabu import FedBABUClient
from baselines.fedper import FedPerClient
from baselines.fedrep import FedRepClient
from baselines.local import LocalClient
from baselines.perfedavg import PerFedAvgClient
from flayer.data.federated import load_client
from flayer.nn.models import build_model
from flayer.nn.params import load_params, shared_params
from flayer.nn.training import EvalResult, evaluate
from flayer.protocol import keys
from flayer.protocol.catalog import METHODS
from flayer.protocol.client import ClientMethod
from flayer.protocol.rounds import held_out
from flayer.results.recorder import round_metrics
from flayer.state.store import ClientStore
from tests.helpers import make_client, make_config
from tests.localgrid import RecordingGrid, run_executors, run_local


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_evaluates_its_new_client_through_the_apps(small, method):
    cfg = small(f"strategy={method}", "new_clients=1", "new_client_epochs=1", "num_rounds=1")
    (new,) = held_out(cfg)
    _, records, _ = run_local(cfg)
    assert [r.round for r in records] == [0, 1]
    for r in records:
        assert r.failures == 0
        assert [c.partition_id for c in r.new_clients] == [new]
        assert new not in [c.partition_id for c in r.clients] and len(r.clients) == 2
        row = round_metrics(r, new_clients=True)
        assert 0 <= row["new_accuracy"] <= 1 and row["new_accuracy_std"] == 0
        assert math.isfinite(r.new_clients[0].loss)
    assert new not in records[1].sampled and records[1].trained == 2
    # it started from the round's global model, not from anything it kept
    assert [r.new_clients[0].extra[keys.INIT_VERSION] for r in records] == [0, 1]


@pytest.mark.parametrize("method", ["flayer", "feddbe"])
def test_a_new_client_is_never_trained_synced_or_stored(small, tmp_path, method):
    # FLAYER syncs every client with each new model (eager); FedDBE asks every client for its
    # feature mean before round 0; round 1 is not evaluated (eval_every=2)
    cfg = small(f"strategy={method}", "new_clients=1", "num_rounds=3", "eval_every=2")
    (new,) = held_out(cfg)
    node = 1000 + new
    grid = RecordingGrid(cfg, node_config={keys.NODE_STATE_DIR: str(tmp_path / "nodes")})
    run_local(cfg, grid=grid)
    to_new = [(m, reply) for m, reply, _ in grid.log if m.metadata.dst_node_id == node]
    kinds = [m.metadata.message_type for m, _ in to_new]
    assert MessageType.TRAIN not in kinds and kinds.count(MessageType.EVALUATE) == 3
    rounds = [int(m.content[keys.CONFIG][keys.SERVER_ROUND]) for m, _ in to_new
              if m.metadata.message_type == MessageType.EVALUATE]
    assert rounds == [0, 2, 3]  # the evaluated rounds only: never a sync
    for m, _ in to_new:
        if m.metadata.message_type == MessageType.EVALUATE:
            assert list(m.content[keys.CONFIG][keys.NEW_CLIENTS]) == [new]
    others = [m for m, _, _ in grid.log if m.metadata.dst_node_id != node
              and m.metadata.message_type == MessageType.EVALUATE]
    assert {int(m.content[keys.CONFIG][keys.SERVER_ROUND]) for m in others} == (
        {0, 1, 2, 3} if method == "flayer" else {0, 2, 3})
    state = grid.contexts[node].state
    assert keys.STATE_ARRAYS not in state and keys.STATE_APP not in state
    folders = {p.name for p in (tmp_path / "nodes").glob("*/*") if any(p.iterdir())}
    assert folders == {f"partition-{p}" for p in range(3) if p != new}
    if method != "flayer":
        return
    # the simulation's layout: the store never holds a file for it
    store = tmp_path / "store"
    run_executors(cfg, store)
    files = ClientStore(store).files()
    assert len(files) == 2 and ClientStore(store).file(new) not in files


def test_zero_epochs_evaluates_the_global_model_it_receives(small):
    cfg = small("strategy=fedavg", "new_clients=1", "new_client_epochs=0")
    (new,) = held_out(cfg)
    loop, records, _ = run_local(cfg)
    data = load_client(cfg, new, 0.0)
    model = build_model(cfg, data.source.spec)
    load_params(model, loop.global_arrays)
    direct = evaluate(model, data.x_test, data.y_test, data, device=torch.device("cpu"))
    got = records[-1].new_clients[0]
    assert (got.correct, got.num_test) == (direct.correct, direct.num)
    assert got.loss == pytest.approx(direct.loss_sum / direct.num, rel=1e-6)
    # and an epoch of fine-tuning changes what it is evaluated with
    _, tuned, _ = run_local(small("strategy=fedavg", "new_clients=1", "new_client_epochs=1"))
    assert tuned[-1].new_clients[0].loss != got.loss
    assert [c.loss for c in tuned[-1].clients] == [c.loss for c in records[-1].clients]


def test_the_same_numbers_whatever_serves_the_clients(small, tmp_path):
    cfg = small("strategy=flayer", "new_clients=1", "num_rounds=1")

    def numbers(records):
        return [[(c.partition_id, c.correct, c.loss, c.extra[keys.STATE_HASH])
                 for c in r.new_clients + r.clients] for r in records]

    _, nodes, _ = run_local(cfg)
    _, one, _ = run_executors(cfg, tmp_path / "one", executors=1)
    _, three, _ = run_executors(cfg, tmp_path / "three", executors=3)
    assert numbers(nodes) == numbers(one) == numbers(three)


def test_the_held_out_clients_are_a_seeded_sample():
    def held(seed, k=3):
        return held_out(make_config("num_clients=10", f"new_clients={k}", f"seed={seed}"))

    assert held(0) == held(0) and len(held(0)) == 3 and held(0) == sorted(set(held(0)))
    assert len({tuple(held(s)) for s in range(6)}) > 1  # the seed picks them
    assert held(0, k=0) == []


def test_join_ratio_samples_the_seen_clients_only(small):
    cfg = small("strategy=fedavg", "num_clients=4", "new_clients=2", "join_ratio=0.5",
                "num_rounds=3")
    new = held_out(cfg)
    _, records, _ = run_local(cfg)
    for r in records[1:]:
        assert len(r.sampled) == 1 and not set(r.sampled) & set(new)  # half of the 2 seen
    assert all(len(r.clients) == 2 and len(r.new_clients) == 2 for r in records)


# ---- what arriving late means, method by method ------------------------------------------

@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_page_says_what_a_client_that_arrives_late_does(method):
    # the module whose docstring is the method's page (as the docs build finds it)
    settings = METHODS.get(method).settings.__module__
    module = importlib.import_module(re.sub(r"\.settings(?=\.|$)", "", settings, count=1))
    assert "\nA client that arrives late (`new_clients`)" in (module.__doc__ or "")


def global_from(client: ClientMethod, shift: float = 1.0) -> dict[str, np.ndarray]:
    """Global arrays for what the client shares: its model's values moved by `shift`."""
    own = shared_params(client.net, client.shared)
    return {n: v + np.float32(shift) for n, v in own.items()}


def params(client: ClientMethod) -> dict[str, np.ndarray]:
    return {n: v.copy() for n, v in shared_params(client.model).items()}


def same(a: EvalResult, b: EvalResult) -> bool:
    return (a.correct, a.num, a.loss_sum) == (b.correct, b.num, b.loss_sum)


def test_fedper_a_new_client_has_the_initial_head_on_the_received_body():
    client = make_client(FedPerClient, make_config("strategy=fedper", "batch_size=8"))
    initial, arrays = params(client), global_from(client)
    client.arrive(arrays, 1, epochs=0)
    after = params(client)
    head = set(initial) - set(arrays)
    assert head and all(np.array_equal(after[n], initial[n]) for n in head)
    assert all(np.array_equal(after[n], arrays[n]) for n in arrays)
    # its epochs train the whole model (FedPer's local update)
    trained = make_client(FedPerClient, make_config("strategy=fedper", "batch_size=8"))
    trained.arrive(arrays, 1, epochs=1)
    moved = params(trained)
    assert not any(np.array_equal(moved[n], arrays[n]) for n in arrays)
    assert not any(np.array_equal(moved[n], initial[n]) for n in head)


def test_fedrep_a_new_client_trains_an_initial_head_on_the_frozen_body():
    client = make_client(FedRepClient, make_config("strategy=fedrep", "batch_size=8"))
    initial, arrays = params(client), global_from(client)
    client.arrive(arrays, 1, epochs=1)
    after = params(client)
    assert all(np.array_equal(after[n], arrays[n]) for n in arrays)  # the body as received
    assert not any(np.array_equal(after[n], initial[n]) for n in set(initial) - set(arrays))


def test_local_a_new_client_trains_the_initial_model():
    client = make_client(LocalClient, make_config("strategy=local", "batch_size=8"))
    initial = params(client)
    client.arrive({}, 3, epochs=0)  # it receives nothing: the initial model, untrained
    assert all(np.array_equal(v, initial[n]) for n, v in params(client).items())
    client.arrive({}, 3, epochs=1)
    assert not all(np.array_equal(v, initial[n]) for n, v in params(client).items())


def test_fedbabu_a_new_client_fine_tunes_the_initial_head_for_its_epochs():
    cfg = make_config("strategy=fedbabu", "batch_size=8", "strategy.fine_tuning_epochs=2")
    client = make_client(FedBABUClient, cfg)
    arrays = global_from(client, 0.0)
    as_received, _ = client.arrive(arrays, 1, epochs=0)  # body + initial head, untuned
    assert same(as_received, ClientMethod.evaluate(client, 1)[0])
    tuned, _ = client.arrive(arrays, 1, epochs=2)
    assert same(tuned, client.evaluate(1)[0])  # its evaluation's fine-tuning, its epochs
    assert tuned.loss_sum != as_received.loss_sum


def test_perfedavg_a_new_client_takes_its_one_adaptation_step():
    client = make_client(PerFedAvgClient, make_config("strategy=perfedavg", "batch_size=8"))
    arrays = global_from(client, 0.0)
    as_received, _ = client.arrive(arrays, 2, epochs=0)
    assert same(as_received, ClientMethod.evaluate(client, 2)[0])  # the meta-model itself
    adapted, _ = client.arrive(arrays, 2, epochs=3)
    assert same(adapted, client.evaluate(2)[0]) and not same(adapted, as_received)


def test_flayer_a_new_client_mixes_with_a_k_0_and_keeps_nothing(small):
    cfg = small("strategy=flayer", "new_clients=1")
    _, records, _ = run_local(cfg)
    for r in records:
        assert r.new_clients[0].extra["mixed-a"] == 0.0
    # a seen client mixes with the accuracy it had at its last evaluation
    assert all(c.extra["mixed-a"] > 0 for c in records[2].clients)
