"""Cohorts: every client served once per message, balanced by sample count, the same split in
every run; the executor count sized from what Ray runs at once."""

import numpy as np
import pytest
from flwr.app import MessageType

from flayer.protocol.cohorts import CLIENT_OVERHEAD, ExecutorPool, balanced, default_executors
from tests.helpers import make_config


class Nodes:
    def __init__(self, ids):
        self.ids = ids

    def get_node_ids(self):
        return list(self.ids)


def test_balanced_groups_cover_every_index_once_and_even_out_the_cost():
    rng = np.random.default_rng(0)
    costs = list(rng.pareto(1.5, size=500) * 100 + 1)
    groups = balanced(costs, 4)
    assert sorted(i for g in groups for i in g) == list(range(500))
    assert all(g == sorted(g) for g in groups)
    loads = [sum(costs[i] for i in g) for g in groups]
    # longest-processing-time-first: no group exceeds the mean by more than the largest item
    assert max(loads) - sum(loads) / 4 <= max(costs)


def test_fewer_clients_than_executors_leaves_no_empty_cohort():
    assert balanced([5.0, 1.0], 4) == [[0], [1]]


def test_route_splits_train_by_train_size_and_evaluation_by_all_samples():
    sizes = np.array([[100, 1], [1, 100], [50, 1], [1, 50]])
    pool = ExecutorPool(sizes)
    pool.refresh(Nodes([7, 3]), 1)
    train = pool.route([0, 1, 2, 3], MessageType.TRAIN)
    assert set(train) == {3, 7}
    assert sorted(p for c in train.values() for p in c) == [0, 1, 2, 3]
    assert [0] in train.values()  # the one big trainer alone
    evaluate = pool.route([0, 1, 2, 3], MessageType.EVALUATE)
    assert sorted(evaluate.values()) == [[0, 2], [1, 3]]  # one big and one small each
    assert pool.route([], MessageType.TRAIN) == {}
    assert pool.route([2], MessageType.TRAIN) == {3: [2]}
    assert CLIENT_OVERHEAD > 0


def test_the_same_round_gets_the_same_cohorts():
    sizes = np.random.default_rng(3).integers(1, 400, size=(200, 2))
    a, b = ExecutorPool(sizes), ExecutorPool(sizes.copy())
    a.refresh(Nodes([1, 2, 3]), 0)
    b.refresh(Nodes([3, 1, 2]), 0)
    pids = list(range(0, 200, 3))
    assert a.route(pids, MessageType.TRAIN) == b.route(reversed(pids), MessageType.TRAIN)


def test_a_pool_without_executors_stops_the_run():
    with pytest.raises(RuntimeError, match="no executor"):
        ExecutorPool(np.ones((3, 2))).wait_for_nodes(Nodes([]))


@pytest.mark.parametrize(("overrides", "resources", "expected"), [
    ((), (2, 0, 0.0), 2),
    (("backend.client_cpus=0.5",), (2, 0, 0.0), 4),
    (("backend.executors=5",), (2, 0, 0.0), 5),
    (("backend.executors=50",), (2, 0, 0.0), 20),  # at most one per client
    ((), (16, 1, 0.25), 4),  # a GPU shared by four executors
    ((), (64, 0, 0.0), 20),
])
def test_default_executor_count(overrides, resources, expected):
    cfg = make_config(*overrides)
    assert default_executors(cfg, *resources) == expected
