"""The simulation's Ray actors on this machine, ended quietly once a run leaves the
simulation (a stop, an executor lost): their processes, found below this one and killed, so
that a task in flight fails at once in Flower's `ray.get`; the worker output Ray copies to
this process; Flower's tracebacks of those failures. The run says what happened in one line
of its own."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import suppress
from pathlib import Path

from flayer.run.stops import stopping

PROC = Path("/proc")
ACTOR_TITLE = b"ray::ClientAppActor"  # the process title of Flower's executor actors


class RayFailureFilter(logging.Filter):
    """Drops Flower's records of a Ray failure (logged with a traceback, twice, per message)
    and everything Flower logs once the round loop is leaving: the simulation reports what
    happened in one line of its own. A ClientApp's own error still shows in full."""

    def __init__(self, leave: threading.Event) -> None:
        super().__init__()
        self.leave = leave

    def filter(self, record: logging.LogRecord) -> bool:
        from ray.exceptions import RayError

        if self.leave.is_set() or stopping() is not None:
            return False
        return not isinstance(sys.exc_info()[1], RayError)  # logged while handling one


def end_actors() -> list[int]:
    """SIGKILL this machine's Ray actors of the simulation (ClientAppActor processes below
    this process), their deaths unreported; returns their pids. A task they run fails at
    once in `ray.get`."""
    mute_workers()
    ended = []
    for pid in descendants(os.getpid()):
        try:
            title = (PROC / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(ACTOR_TITLE):
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                ended.append(pid)
    return ended


def mute_workers(muted: bool = True) -> None:
    """Stop (or go back to) printing what Ray's workers and raylet report (Ray's driver
    copies it to this process's output): a simulation that is leaving has said why in its
    own line, and the raylet would report each actor ended as a worker killed by an
    unexpected error. The switch is the one Ray's own debugger uses."""
    with suppress(ImportError):
        import ray._private.worker as ray_worker

        ray_worker._worker_logs_enabled = not muted


def descendants(root: int) -> list[int]:
    """Every live process below `root` (read from /proc; none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    with suppress(OSError):
        for entry in os.listdir(PROC):
            if not entry.isdigit():
                continue
            try:
                stat = (PROC / entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(parent, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
