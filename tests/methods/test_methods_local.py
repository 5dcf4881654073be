"""Every registered method, a few rounds through the real ServerApp logic and ClientApp
handlers on an in-process grid (no Ray): the client/strategy contract holds end to end."""

import numpy as np
import pytest

from flayer.protocol import keys
from flayer.protocol.catalog import METHODS
from tests.localgrid import run_local


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_runs_rounds_through_the_apps(small, method):
    strategy, records, _ = run_local(small(f"strategy={method}"))
    assert [r.round for r in records] == [0, 1, 2]
    assert all(r.failures == 0 for r in records)
    assert all(len(r.clients) == 3 for r in records)  # everyone evaluated every round
    assert records[1].trained == 3
    # bytes go up exactly when the method declares something to upload (`local`: nothing)
    uploads = bool(strategy.server.upload_spec(strategy.global_arrays))
    assert (records[1].upload_bytes > 0) == uploads
    assert strategy.version == 2
    extra = METHODS.get(method).client.train_metrics  # metrics.csv's extra columns
    assert set(records[1].train_metrics) == set(extra)
    assert all(np.isfinite(v) for v in records[1].train_metrics.values())
    acc = [sum(c.correct for c in r.clients) / sum(c.num_test for c in r.clients)
           for r in records]
    assert acc[-1] > 0.25  # learnable data; chance is 0.1


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_runs_a_round_on_rotated_clients(small, single_thread, method):
    # three clients in three groups: 0, 120 and 240 degrees (sampled turns, not exact ones)
    _, records, _ = run_local(small(f"strategy={method}", "num_rounds=1", "shift=rotate",
                                    "shift.groups=3"))
    assert [r.round for r in records] == [0, 1]
    assert all(r.failures == 0 and len(r.clients) == 3 for r in records)
    assert records[1].trained == 3
    assert all(np.isfinite(c.accuracy) for r in records for c in r.clients)


def test_personal_state_survives_rounds(small):
    _, records, grid = run_local(small("strategy=flayer"))
    for ctx in grid.contexts.values():
        meta = ctx.state[keys.STATE_META]  # the method's own, apart from the app's version
        assert "rates" in meta and 0 <= meta["a_k"] <= 1 and "version" not in meta
        assert ctx.state[keys.STATE_APP][keys.STATE_VERSION] == 2
    # the a_k a client mixed with in round 2 is its accuracy evaluated in round 1
    r1 = {c.partition_id: c for c in records[1].clients}
    for c in records[2].clients:
        assert c.extra["mixed-a"] == pytest.approx(r1[c.partition_id].accuracy)


def test_a_missing_node_is_counted_and_the_run_finishes(small):
    _, records, _ = run_local(small("strategy=flayer"), down={1: 1})  # gone from round 1
    assert [r.failures for r in records] == [0, 2, 2]  # its train and evaluate replies
    assert [r.trained for r in records] == [0, 2, 2]
    assert records[-1].round == 2 and len(records[-1].clients) == 2


def test_join_ratio_trains_a_seeded_subset_but_evaluates_all(small):
    strategy, records, _ = run_local(small("strategy=fedavg", "join_ratio=0.34"))
    assert [r.trained for r in records[1:]] == [1, 1]
    assert all(len(r.clients) == 3 for r in records)


def test_same_seed_same_numbers_other_seed_other_numbers(small):
    _, a, _ = run_local(small("strategy=flayer", "seed=5"))
    _, b, _ = run_local(small("strategy=flayer", "seed=5"))
    _, other, _ = run_local(small("strategy=flayer", "seed=6"))
    for ra, rb in zip(a, b, strict=True):
        assert [c.correct for c in ra.clients] == [c.correct for c in rb.clients]
        assert ra.train_loss == rb.train_loss or (ra.train_loss is None and rb.train_loss is None)
    assert np.isfinite(a[-1].train_loss)
    # the seed reaches the numbers (split, initial model, batches): another seed, others
    assert [r.train_loss for r in other[1:]] != [r.train_loss for r in a[1:]]
    assert ([[c.num_test for c in r.clients] for r in other]
            != [[c.num_test for c in r.clients] for r in a])
