"""The roster with a mocked grid: which node serves which partition, new nodes asked once,
duplicate claims refused, lost nodes waited for once and then left out."""

from __future__ import annotations

from flwr.app import Message, MessageType, MetricRecord, RecordDict

from flayer.apps.inprocess import new_message
from flayer.config.schema import BackendConfig
from flayer.protocol import keys
from flayer.protocol.roster import Roster
from tests.helpers import mock_reply


class Nodes:
    """Connected nodes answering QUERY messages with the partition each claims."""

    def __init__(self, claims: dict[int, int]) -> None:
        self.claims = claims  # node id -> partition id it says it holds
        self.asked: list[int] = []

    def get_node_ids(self) -> list[int]:
        return list(self.claims)

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        replies = []
        for msg in messages:
            assert msg.metadata.message_type == MessageType.QUERY
            node = msg.metadata.dst_node_id
            self.asked.append(node)
            metrics = MetricRecord({keys.PARTITION_ID: self.claims[node]})
            replies.append(mock_reply(node, RecordDict({keys.METRICS: metrics}),
                                      message_type=MessageType.QUERY))
        return replies


def roster(num_clients: int = 3) -> Roster:
    return Roster(num_clients, BackendConfig(name="deploy", node_wait=0.0), new_message)


def test_round_0_asks_every_node_and_later_rounds_only_new_ones():
    r, grid = roster(), Nodes({7: 2, 5: 0, 9: 1})
    r.refresh(grid, 0)
    assert sorted(grid.asked) == [5, 7, 9]
    assert r.partitions == [0, 1, 2]
    assert r.served([0, 1, 2]) == {0: 5, 1: 9, 2: 7}
    r.refresh(grid, 1)
    assert sorted(grid.asked) == [5, 7, 9]  # nobody new: nobody asked


def test_a_second_claim_on_a_served_partition_is_refused_and_never_asked_again():
    r, grid = roster(), Nodes({5: 0, 6: 0, 9: 1})
    r.refresh(grid, 0)
    assert r.served([0, 1]) == {0: 5, 1: 9}  # the lower node id answered first
    assert not r.claim(0, 6)
    r.refresh(grid, 1)
    assert grid.asked.count(6) == 1


def test_a_lost_node_is_left_out_and_its_replacement_takes_over():
    r, grid = roster(), Nodes({5: 0, 9: 1, 7: 2})
    r.refresh(grid, 0)
    del grid.claims[9]  # its SuperNode stops
    r.refresh(grid, 1)  # waits node_wait (0 s) once, then goes on without it
    assert r.node(1) is None and r.served([0, 1, 2]) == {0: 5, 2: 7}
    assert r.partitions == [0, 1, 2]  # still the run's client: its absence counts as failures
    grid.claims[11] = 1  # restarted: a new node id
    r.refresh(grid, 2)
    assert r.node(1) == 11 and grid.asked[-1] == 11
