"""The round loop's grid in a Ray simulation: Flower's, watched.

It waits for replies as Flower's grid does, and makes the round loop leave the simulation
(`Leave`) at its next call once the run is told to leave (a stop), and when an executor is
lost: a reply says its Ray actor failed (Flower's actor pool would keep the dead actor and fail
every later message sent to it), or no reply came within the round's timeout (a late reply
would write clients' state after the server has moved on). Either way the run ends; a resume
continues it from the last checkpoint. A client's own error (its ClientApp raised) stays one
failed reply, as everywhere.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from flayer.protocol import keys

PULL_INTERVAL = 0.1  # seconds between polls for replies (Flower's own pace)
_FLOWER_REASON = re.compile(r"<class '(?:[\w.]*\.)?(\w+)'>:<'(.*)", re.DOTALL)


class Leave(Exception):  # noqa: N818 - an instruction to the round loop, not an error
    """The round loop leaves the simulation now."""


class ExecutorLost(Leave):
    """An executor failed or did not answer; names the round and the clients it served."""


class SimulationGrid(Grid):
    """Flower's grid, with `leave` set: every call raises Leave; with a reply from a failed
    executor, or none within the timeout: ExecutorLost."""

    def __init__(self, grid: Grid, leave: threading.Event) -> None:
        self.grid = grid
        self.leave = leave

    def _check(self) -> None:
        if self.leave.is_set():
            raise Leave("the run was told to leave")

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        self._check()
        messages = list(messages)
        list(self.grid.push_messages(messages))
        sent = {m.metadata.message_id: m for m in messages}
        waiting = set(sent)
        replies: list[Message] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        while waiting:
            self._check()
            got = list(self.grid.pull_messages(waiting))
            for reply in got:
                failure = executor_failure(reply)
                if failure is not None:
                    self._check()  # an actor ended by a stop is no loss
                    msg = sent.get(reply.metadata.reply_to_message_id)
                    raise ExecutorLost(f"{where(msg)}: the executor serving them failed "
                                       f"({failure})")
            replies.extend(got)
            waiting -= {r.metadata.reply_to_message_id for r in got}
            if waiting and deadline is not None and time.monotonic() >= deadline:
                self._check()
                late = [sent[i] for i in sorted(waiting)]
                raise ExecutorLost(f"{where(*late)}: no reply from their executor within "
                                   f"backend.round_timeout={timeout:g} s")
            if waiting:
                time.sleep(PULL_INTERVAL)
        return replies

    # ---- the rest, Flower's own ------------------------------------------------------------
    def get_node_ids(self) -> Iterable[int]:
        self._check()
        return self.grid.get_node_ids()

    @property
    def run(self):  # noqa: ANN201 - Flower's Run
        return self.grid.run

    def set_run(self, run_id: int) -> None:
        self.grid.set_run(run_id)

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.grid.create_message(*args, **kwargs)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self._check()
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self._check()
        return self.grid.pull_messages(message_ids)


def executor_failure(reply: Message) -> str | None:
    """What failed, where a reply is an error not raised by the ClientApp itself (the actor
    died, the backend could not run it): e.g. "ActorDiedError: The actor died unexpectedly
    before finishing this task."; None for any other reply."""
    if not reply.has_error() or reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION:
        return None
    reason = str(reply.error.reason or "")
    m = _FLOWER_REASON.match(reason)  # Flower writes "<class 'X'>:<'message'>"
    if m:
        first = m.group(2).strip().splitlines()[0].rstrip("'>") if m.group(2).strip() else ""
        return f"{m.group(1)}: {first}" if first else m.group(1)
    return reason.strip().splitlines()[0] if reason.strip() else f"error {reply.error.code}"


def where(*messages: Message | None) -> str:
    """The round and clients of the messages: "round 3, clients 0, 2"."""
    rounds: set[int] = set()
    clients: list[int] = []
    for msg in messages:
        if msg is None:
            continue
        config = msg.content.config_records.get(keys.CONFIG, {})
        if keys.SERVER_ROUND in config:
            rounds.add(int(config[keys.SERVER_ROUND]))
        clients.extend(int(p) for p in config.get(keys.COHORT, []))
    text = f"round {min(rounds)}" if rounds else "a round"
    if clients:
        text += f", client{'s' if len(clients) > 1 else ''} {', '.join(map(str, sorted(clients)))}"
    return text
