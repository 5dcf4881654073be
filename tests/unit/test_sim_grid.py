"""The simulation's watched grid, on a stand-in for Flower's: an executor whose Ray actor
failed, or that does not answer within the timeout, ends the round loop with one message
naming the round and the clients; a ClientApp's own error stays a failed reply; a run told to
leave leaves at its next call, even while it waits for replies. And the log filter that keeps
Flower's Ray tracebacks out of the output."""

from __future__ import annotations

import logging
import sys
import threading
import time
from uuid import uuid4

import pytest
from flwr.app import ConfigRecord, Error, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode

from flayer.apps.actors import RayFailureFilter
from flayer.apps.inprocess import new_message
from flayer.apps.sim_grid import ExecutorLost, Leave, SimulationGrid, executor_failure
from flayer.protocol import keys

ACTOR_DIED = ("<class 'ray.exceptions.ActorDiedError'>:<'The actor died unexpectedly before "
              "finishing this task.\n\tclass_name: ClientAppActor\n\tpid: 4242'>")


class StandIn:
    """Flower's grid as the round loop sees it: messages in, replies out as `answer` says
    (None: no reply)."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.replies: list[Message] = []

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            reply = self.answer(msg)
            if reply is not None:
                self.replies.append(reply)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids):
        ready = [r for r in self.replies if r.metadata.reply_to_message_id in message_ids]
        self.replies = [r for r in self.replies if r not in ready]
        return ready

    def get_node_ids(self):
        return [1, 2]


def work(node: int, cohort: list[int], server_round: int = 3) -> Message:
    return new_message(RecordDict({keys.CONFIG: ConfigRecord({
        keys.SERVER_ROUND: server_round, keys.COHORT: cohort})}), node, MessageType.TRAIN)


def ok(msg: Message) -> Message:
    return Message(RecordDict(), reply_to=msg)


def failed(code: int, reason: str):
    return lambda msg: Message(Error(code=code, reason=reason), reply_to=msg)


def test_replies_come_back_as_from_flowers_grid():
    grid = SimulationGrid(StandIn(ok), threading.Event())
    replies = grid.send_and_receive([work(1, [0, 2]), work(2, [1, 3])], timeout=5)
    assert len(replies) == 2 and not any(r.has_error() for r in replies)


def test_an_executor_whose_actor_died_ends_the_round_loop_naming_its_clients():
    died = failed(ErrorCode.UNKNOWN, ACTOR_DIED)
    grid = SimulationGrid(StandIn(lambda m: died(m) if m.metadata.dst_node_id == 2 else ok(m)),
                          threading.Event())
    with pytest.raises(ExecutorLost) as lost:
        grid.send_and_receive([work(1, [0, 2]), work(2, [1, 3])], timeout=5)
    assert str(lost.value) == ("round 3, clients 1, 3: the executor serving them failed "
                               "(ActorDiedError: The actor died unexpectedly before finishing "
                               "this task.)")


def test_a_clientapps_own_error_stays_a_failed_reply():
    raised = failed(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, "<class 'ValueError'>:<'bad'>")
    grid = SimulationGrid(StandIn(raised), threading.Event())
    (reply,) = grid.send_and_receive([work(1, [0])], timeout=5)
    assert reply.has_error() and executor_failure(reply) is None


def test_no_reply_within_the_timeout_ends_the_round_loop_naming_the_clients():
    grid = SimulationGrid(StandIn(lambda m: ok(m) if m.metadata.dst_node_id == 1 else None),
                          threading.Event())
    started = time.monotonic()
    with pytest.raises(ExecutorLost) as lost:
        grid.send_and_receive([work(1, [0, 2], 5), work(2, [1, 3], 5)], timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 3
    assert str(lost.value) == ("round 5, clients 1, 3: no reply from their executor within "
                               "backend.round_timeout=0.5 s")


def test_a_run_told_to_leave_leaves_while_it_waits_and_at_its_next_call():
    leave = threading.Event()
    grid = SimulationGrid(StandIn(lambda m: None), leave)
    threading.Timer(0.3, leave.set).start()
    started = time.monotonic()
    with pytest.raises(Leave) as left:
        grid.send_and_receive([work(1, [0])], timeout=60)
    assert not isinstance(left.value, ExecutorLost) and time.monotonic() - started < 3
    with pytest.raises(Leave):
        grid.get_node_ids()


def test_flowers_records_of_a_ray_failure_are_dropped_and_others_kept():
    from ray.exceptions import RayActorError

    leave = threading.Event()
    quiet = RayFailureFilter(leave)

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("flwr", logging.ERROR, __file__, 1, msg, None, None)

    try:
        raise RayActorError()
    except RayActorError:
        assert not quiet.filter(record("Traceback ... ray.exceptions.RayActorError"))
    try:
        raise ValueError("a ClientApp's bug")
    except ValueError:
        assert quiet.filter(record("Traceback ... ValueError: a ClientApp's bug"))
    assert sys.exc_info()[1] is None and quiet.filter(record("anything"))
    leave.set()  # leaving: Flower has nothing more to say
    assert not quiet.filter(record("anything"))


def test_ending_the_actors_kills_exactly_the_executor_processes_below_this_one():
    import subprocess

    from flayer.apps.actors import end_actors, mute_workers

    actor = subprocess.Popen(["bash", "-c", 'exec -a "ray::ClientAppActor.run" sleep 60'])
    other = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.3)  # exec'd
        assert end_actors() == [actor.pid]
        assert actor.wait(timeout=10) == -9 and other.poll() is None
    finally:
        mute_workers(False)
        for p in (actor, other):
            p.kill()
            p.wait()
