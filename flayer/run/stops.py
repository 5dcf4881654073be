"""Clean stops: Ctrl-C, SIGINT and SIGTERM end a run within seconds, its partial results and
last checkpoint kept.

Python runs signal handlers in the main thread. While `stop_on_signals` is active, the first
SIGINT or SIGTERM raises `Stopped` there, a BaseException that unwinds to where the run's
summary and plot are written (atomically); the command then exits 128 + the signal's number
(130, 143) with one line saying how to resume. The round in flight is dropped: the checkpoint
of the last finished round is the one a resume starts from. A second signal while stopping
ends the process at once.

Stopped must never be raised inside code that other threads depend on: the simulation keeps
its main thread out of Ray and Flower (it waits for them; see flayer.run.simulation), and
`held_signals` delays a stop past a block that must not be cut short (starting Ray, writing
the results). Other threads ask `stopping()` at their safe points; the main thread's own
safe points (`raise_if_asked`) raise a stop again that was swallowed where it landed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

from flayer.util.commands import run_command

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """A signal asked the run to stop (a BaseException, so that no `except Exception` on the
    way out swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    """The process's one stop: the first signal's number, whether Stopped was raised for it,
    how deep stop_on_signals and held_signals are nested (main thread only)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.signum: int | None = None
        self.raised = False
        self.depth = 0
        self.held = 0
        self.asked = threading.Event()


_state = _State()


def stopping() -> int | None:
    """The signal a stop underway was asked with; None while no stop is asked (any thread)."""
    return _state.signum if _state.asked.is_set() else None


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.asked.is_set():  # asked again while stopping: no more waiting
        exit_now(128 + signum)
    _state.signum = signum
    _state.asked.set()
    if not _state.held:
        _raise()


def _raise() -> None:
    _state.raised = True
    raise Stopped(_state.signum or signal.SIGINT)


def raise_if_asked() -> None:
    """At a safe point of the main thread (under stop_on_signals, outside a held block): raise
    Stopped for a stop already asked. The Stopped raised where the signal landed can be
    swallowed there (code that ignores what its callbacks raise: Cython's patching of a module
    at import reports "Exception ignored" and goes on), and the run must stop all the same."""
    if _on_main_thread() and _state.depth and not _state.held and _state.asked.is_set():
        _raise()


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise Stopped in the main thread (elsewhere: no change).
    Nested, it puts the handlers back on top (a library inside, like Ray, may have replaced
    them) and keeps them there when it ends; the outermost restores what was before."""
    if not _on_main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth:
            for s in SIGNALS:
                signal.signal(s, _handler)
        else:
            for s, old in previous.items():
                signal.signal(s, old)
            _state.reset()  # a later run in this process starts with no stop asked


@contextmanager
def held_signals() -> Iterator[None]:
    """Within (main thread, under stop_on_signals): a first signal is noted, and Stopped is
    raised when the block ends, not inside it; a second one still ends the process at once.
    Elsewhere: no change."""
    if not _on_main_thread() or not _state.depth:
        yield
        return
    _state.held += 1
    try:
        yield
    finally:
        _state.held -= 1
    if not _state.held and _state.asked.is_set() and not _state.raised:
        _raise()


def exit_on_signals() -> None:
    """For a command, from its first moment: SIGINT and SIGTERM end the process at once with
    one line (no run is under way: nothing is half-written); a run's stop_on_signals raises
    Stopped instead while it lasts."""
    if _on_main_thread():
        for s in SIGNALS:
            signal.signal(s, _exit_handler)


def _exit_handler(signum: int, frame: FrameType | None) -> None:
    print(stop_message(Stopped(signum), None), file=sys.stderr)
    exit_now(128 + signum)


def stop_message(stop: Stopped, run_dir: Path | None) -> str:
    """The one line a stop ends with: where the partial results are and how to continue
    (`run_dir`: the run's folder, None where none was written yet)."""
    if run_dir is None:
        return f"stopped ({stop}) before the run started; nothing was written"
    return (f"stopped ({stop}); partial results in {run_dir}; continue with: "
            f"{run_command(f'resume={run_dir}')}")


def exit_now(code: int) -> None:
    """End the process now, output flushed: threads still waiting for replies that will never
    come (the round in flight) must not hold it."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError, RuntimeError):  # RuntimeError: a reentrant write
            stream.flush()
    os._exit(code)
