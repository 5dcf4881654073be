"""The simulation's layout: a few executors serve every client in cohorts, keep each client's
state in the store, and sum their clients' uploads. It gives the numbers of one node per client
(the layout of real machines), holds only what each method keeps, and counts a client whose
computation fails as a failure of that client alone."""

import numpy as np
import pytest

from flayer.protocol.catalog import METHODS
from flayer.state.store import ClientStore
from tests.localgrid import run_executors, run_local


def outcome(records):
    return [(r.trained, r.failures, r.upload_bytes, r.train_loss,
             [(c.partition_id, c.correct, c.num_test, c.loss, c.extra.get("state-hash"))
              for c in r.clients]) for r in records]


@pytest.mark.parametrize("method", METHODS.names())
def test_executors_give_the_numbers_of_a_node_per_client(small, tmp_path, method):
    cfg = small(f"strategy={method}", "num_clients=5", "join_ratio=0.6")
    _, nodes, _ = run_local(cfg)
    _, executors, grid = run_executors(cfg, tmp_path / "store", executors=2)
    assert outcome(executors) == outcome(nodes)
    assert all(len(c.state) == 0 for c in grid.contexts.values())  # no state on the nodes


def test_the_executor_count_does_not_change_the_numbers(small, tmp_path):
    cfg = small("strategy=flayer", "num_clients=5")
    _, one, _ = run_executors(cfg, tmp_path / "one", executors=1)
    _, three, _ = run_executors(cfg, tmp_path / "three", executors=3)
    for a, b in zip(one, three, strict=True):
        assert [c.correct for c in a.clients] == [c.correct for c in b.clients]
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-6) if a.train_loss else True
        assert a.upload_bytes == b.upload_bytes


@pytest.mark.parametrize(("method", "kept"), [
    ("fedavg", set()),  # the CNN has no BatchNorm: every parameter comes from the server
    ("fedper", {"fc.weight", "fc.bias"}),
    ("flayer", {"fc.weight", "fc.bias"}),  # its top-P (P=2) tensors
    ("feddbe", {"bias"}),
    ("fedcp", {"net.fc.weight", "net.fc.bias", "context"}),
    ("ditto", {"conv1.0.weight", "conv1.0.bias", "conv2.0.weight", "conv2.0.bias",
               "fc1.0.weight", "fc1.0.bias", "fc.weight", "fc.bias"}),
])
def test_the_store_holds_what_each_method_keeps(small, tmp_path, method, kept):
    cfg = small(f"strategy={method}")
    run_executors(cfg, tmp_path / "store")
    store = ClientStore(tmp_path / "store")
    for pid in range(cfg.num_clients):
        saved = store.load(pid)
        model = {k[len("model/"):] for k in saved.arrays if k.startswith("model/")}
        assert model == kept
        assert saved.version == 2


def test_a_client_whose_work_fails_is_a_failure_of_its_own(small, tmp_path):
    """A client's computation failing (here: a personal head of the wrong shape, which its
    method cannot load) is that client's failure; the run goes on. A state file that cannot
    be read at all is the run's storage failing instead (tests/system/test_damaged_runs.py)."""
    cfg = small("strategy=fedper", "num_clients=4", "num_rounds=2")

    def break_client_2(rec, grid):
        if rec.round == 0:
            saved = grid.store.load(2)
            saved.arrays = {k: np.zeros((3, 3), np.float32) for k in saved.arrays}
            grid.store.save(2, saved)

    _, records, _ = run_executors(cfg, tmp_path / "store", on_round=break_client_2)
    r1 = records[1]
    assert (r1.trained, r1.failures) == (3, 2)  # its training and its evaluation
    assert [c.partition_id for c in r1.clients] == [0, 1, 3]
    assert np.isfinite(r1.train_loss) and records[-1].round == 2
