"""Personal state kept on the node's disk (node config state-dir), the evaluation metrics that
show it, and a node that comes back under a new node id, all in-process (no Flower
processes): the same handlers and strategy a deployment runs."""

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from flayer.apps.node_client import partition_of
from flayer.state.personal import Personal, load_state, save_state, state_hash
from flayer.state.store import NodeStates
from tests.localgrid import LocalGrid, run_local


def test_state_file_round_trip_is_exact(tmp_path):
    arrays = {"model/fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
              "ala-w/x": np.array([0.5]), "mask": np.array([1, 0], dtype=np.uint8)}
    meta = {"a_k": 0.25, "rates": [0.1, 0.2], "joined": True}
    file = tmp_path / "s" / "partition-7.npz"
    save_state(file, Personal(arrays=arrays, meta=meta, version=3))
    saved = load_state(file)
    loaded = saved.arrays
    assert saved.meta == meta and saved.version == 3
    assert set(loaded) == set(arrays)
    for k, v in arrays.items():
        assert loaded[k].dtype == v.dtype and np.array_equal(loaded[k], v)
    assert state_hash(loaded) == state_hash(arrays)
    assert [p.name for p in file.parent.iterdir()] == ["partition-7.npz"]  # no temp files
    assert load_state(tmp_path / "s" / "partition-8.npz") is None


def test_a_node_restores_the_newest_state_written_before_the_message(tmp_path):
    disk = NodeStates(str(tmp_path), "run-a", 3)
    for stamp in [(0, 1), (1, 0), (1, 1), (2, 0)]:
        disk.save(stamp, Personal(version=stamp[0], meta={"at": list(stamp)}),
                  checkpoint_round=-1)
    assert disk.before((2, 1)).meta["at"] == [2, 0]  # restarted mid-round: its last state
    # a run continued after the checkpoint of round 1: round 2's state is passed over
    assert disk.before((2, 0)).meta["at"] == [1, 1]
    assert disk.before((0, 1)) is None
    assert NodeStates(str(tmp_path), "run-b", 3).latest() is None  # another run: nothing
    # with a checkpoint of round 1, what came before round 1's last state is gone
    disk.save((3, 0), Personal(version=3), checkpoint_round=1)
    assert disk.stamps() == [(1, 1), (2, 0), (3, 0)]


def test_state_hash_sees_every_value_and_name():
    a = {"w": np.zeros(4, dtype=np.float32)}
    b = {"w": np.array([0, 0, 0, 1e-7], dtype=np.float32)}
    assert state_hash(a) != state_hash(b)
    assert state_hash(a) != state_hash({"v": a["w"]})
    assert 0 <= state_hash(a) < 2**48 and float(state_hash(a)) == state_hash(a)


def _ctx(**node_config):
    return Context(run_id=1, node_id=5, node_config=node_config, state=RecordDict(),
                   run_config={})


def test_a_node_must_match_the_run(small):
    cfg = small()
    assert partition_of(cfg, _ctx(**{"partition-id": 2, "num-partitions": 3})) == 2
    assert partition_of(cfg, _ctx(**{"partition-id": 1})) == 1
    with pytest.raises(ValueError, match="num-partitions=4 but the run has num_clients=3"):
        partition_of(cfg, _ctx(**{"partition-id": 0, "num-partitions": 4}))
    with pytest.raises(ValueError, match="outside 0..2"):
        partition_of(cfg, _ctx(**{"partition-id": 3, "num-partitions": 3}))
    with pytest.raises(ValueError, match="lacks partition-id"):
        partition_of(cfg, _ctx())


def test_evaluation_reports_version_and_state_hash_and_the_state_dir_holds_it(small, tmp_path):
    grid = LocalGrid(small("strategy=flayer"), node_config={"state-dir": str(tmp_path)})
    _, records, grid = run_local(grid.cfg, grid=grid)
    for rec in records:
        for c in rec.clients:
            assert c.extra["init-version"] == rec.model_version
    for k in range(3):
        saved = NodeStates(str(tmp_path), "run-1", k).latest()  # keyed by the run id here
        assert saved is not None
        last = next(c for c in records[-1].clients if c.partition_id == k)
        assert last.extra["state-hash"] > 0
        assert state_hash(saved.arrays) == last.extra["state-hash"]  # the file is what it said
        assert saved.meta["a_k"] == pytest.approx(last.accuracy)
        assert saved.version == records[-1].model_version  # the app's own bookkeeping
        assert "version" not in saved.meta  # kept apart from the method's state


@pytest.mark.parametrize("state_dir", [True, False])
def test_a_restarted_node_is_found_again_and_keeps_its_state_only_with_a_state_dir(
        small, tmp_path, state_dir):
    config = {"state-dir": str(tmp_path)} if state_dir else {}
    grid = LocalGrid(small("strategy=flayer"), node_config=config)
    new_node = {}

    def restart_after_round_1(rec, grid):
        if rec.round == 1:
            new_node["id"] = grid.restart(1)  # new node id, empty memory

    strategy, records, _ = run_local(grid.cfg, grid=grid, on_round=restart_after_round_1)
    assert len([n for r, n in grid.queried if r == 0]) == 3  # round 0 asks every node
    later = [n for r, n in grid.queried if r > 0]
    assert later == [new_node["id"]]  # asked once which partition it holds
    assert strategy.roster.node(1) == new_node["id"]
    assert [r.failures for r in records] == [0, 0, 0]
    assert records[2].trained == 3 and len(records[2].clients) == 3
    r1 = {c.partition_id: c.accuracy for c in records[1].clients}
    mixed = {c.partition_id: c.extra["mixed-a"] for c in records[2].clients}
    for k in (0, 2):
        assert mixed[k] == pytest.approx(r1[k])
    if state_dir:  # restored from its disk: it mixes with the a_k it measured in round 1
        assert mixed[1] == pytest.approx(r1[1])
    else:  # its memory is gone: it starts over with a_k = 0
        assert mixed[1] == 0.0 != r1[1]


def test_a_node_that_never_comes_back_is_waited_for_once_and_counted(small):
    cfg = small("strategy=fedavg", "num_rounds=3", "backend.node_wait=0.5")
    gone = {}

    def remove_after_round_1(rec, grid):
        if rec.round == 1:
            gone["node"] = next(n for n, c in grid.contexts.items()
                                if c.node_config["partition-id"] == 2)
            del grid.contexts[gone["node"]]

    strategy, records, grid = run_local(cfg, grid=LocalGrid(cfg), on_round=remove_after_round_1)
    # rounds 2 and 3: its training and its evaluation are missing
    assert [r.failures for r in records] == [0, 0, 2, 2]
    assert [r.trained for r in records] == [0, 3, 2, 2]
    assert records[-1].round == 3 and len(records[-1].clients) == 2
    assert all(r == 0 for r, _ in grid.queried)  # only round 0 asks who is who
