"""Clean stops: Ctrl-C, SIGINT and SIGTERM end a run within seconds, its partial results and
last checkpoint kept.

Flower runs the round loop in a thread of its own and the simulation engine in the main thread,
where Python delivers signals. While a run is simulated, SIGINT and SIGTERM raise `Stopped` in
the main thread: it unwinds the engine (which stops Ray's actors and Ray), the run folder's
summary and plot are written on the way out, and the command exits 128 + the signal's number
(130, 143) with one line saying how to resume. The round in flight is dropped: the checkpoint
of the last finished round is the one a resume starts from. A second signal while that happens
ends the process at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """A signal asked the run to stop (a BaseException, so that no `except Exception` on the
    way out swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise Stopped in the main thread (elsewhere: no change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if fired:  # asked again while stopping: no more waiting
            exit_now(128 + signum)
        fired.append(signum)
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def exit_now(code: int) -> None:
    """End the process now, output flushed: threads still waiting for replies that will never
    come (the round in flight) must not hold it."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
