"""The processes a deployment starts, and stopping exactly those and what they started.

Flower's SuperLink and SuperNodes start helpers of their own (SuperExec, one ServerApp or
ClientApp process per task), some in a session of their own. Each process started here leads
a new session; a member is any live process in one of those sessions, a descendant of one, or
in a session such a process created. Stopping sends SIGTERM to the members (SuperNodes then
leave the federation cleanly), waits, then SIGKILLs whatever is left. Membership is read from
/proc (Linux); elsewhere only the started processes themselves are tracked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

PROC = Path("/proc")


@dataclass
class Started:
    """One process started by a ProcessSet, with its log file."""

    name: str
    popen: subprocess.Popen
    log: Path
    _log_file: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every live, non-zombie process."""
    table: dict[int, tuple[int, int]] = {}
    if not PROC.is_dir():
        return table
    for entry in os.listdir(PROC):
        if not entry.isdigit():
            continue
        try:
            text = (PROC / entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] in ("Z", "X"):  # already exited, waiting to be reaped
            continue
        table[int(entry)] = (int(fields[1]), int(fields[3]))
    return table


def members(roots: set[int]) -> set[int]:
    """Live processes that belong to the sessions led by `roots` (see the module doc)."""
    return _members(roots)[0]


def _members(roots: set[int]) -> tuple[set[int], set[int]]:
    """(member pids, the sessions they are in)."""
    table = _process_table()
    if not table:  # no /proc: only the roots themselves
        return {pid for pid in roots if _alive(pid)}, set(roots)
    sessions = set(roots)
    found: set[int] = set()
    changed = True
    while changed:
        changed = False
        for pid, (ppid, sid) in table.items():
            if pid in found:
                continue
            if sid in sessions or ppid in found:  # a started process leads its own session
                found.add(pid)
                sessions.add(sid)
                changed = True
    return found, sessions


def running(pids: set[int]) -> set[int]:
    """Those of `pids` that are still running (not exited, not zombies)."""
    return {pid for pid in pids if _alive(pid) and not _zombie(pid)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class ProcessSet:
    """Starts processes (each in a new session, output to a log file) and stops them all,
    also when used as a context manager that exits by an exception or Ctrl-C."""

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = dict(os.environ if env is None else env)
        self.started: list[Started] = []
        self._roots: set[int] = set()  # started and not yet stopped
        self._ever: set[int] = set()  # every process started here
        self._sessions: set[int] = set()  # sessions its processes were seen in

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> Started:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        log_file = open(log, "ab")  # noqa: SIM115  (closed when the process is stopped)
        with _signals_held():
            popen = subprocess.Popen(
                list(argv), stdout=log_file, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env={**self.env, **(env or {})}, cwd=cwd,
                start_new_session=True,
            )
            proc = Started(name=name, popen=popen, log=log, _log_file=log_file)
            self.started.append(proc)
            self._roots.add(popen.pid)
            self._ever.add(popen.pid)
        return proc

    def members(self) -> set[int]:
        """Every live process this set started, directly or through its processes."""
        return self._scan(self._roots)

    def leftovers(self) -> set[int]:
        """Live processes from any session this set's processes were ever seen in (empty
        after stop_all)."""
        return self._scan(self._ever | self._sessions)

    def _scan(self, roots: set[int]) -> set[int]:
        found, sessions = _members(roots)
        self._sessions |= sessions
        return found

    def stop(self, proc: Started, *, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop one started process and everything it started (SIGKILL at once with kill)."""
        self._stop({proc.pid}, kill=kill, timeout=timeout)
        self._reap(proc)
        self._roots.discard(proc.pid)  # its pid may be reused by an unrelated process

    def stop_all(self, timeout: float = 15.0) -> None:
        # also sessions seen before: a helper whose parent already died is still found there
        self._stop(self._roots | self._sessions, kill=False, timeout=timeout)
        for proc in self.started:
            self._reap(proc)
        self._roots.clear()

    def _stop(self, roots: set[int], *, kill: bool, timeout: float) -> None:
        pids = self._scan(roots) | running(roots)
        if not pids:
            return
        _signal(pids, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.started:  # reap our own children so they do not linger as zombies
                proc.popen.poll()
            pids = running(pids | self._scan(roots))
            if not pids:
                return
            time.sleep(0.2)
        _signal(pids, signal.SIGKILL)

    def _reap(self, proc: Started) -> None:
        try:
            proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()
        if not proc._log_file.closed:
            proc._log_file.close()

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


_HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Delivers Ctrl-C, SIGTERM and SIGHUP only after the block. A handler that raises
    inside `subprocess.Popen`, after the fork, loses the new process's pid: that process
    leads a session of its own, so nothing could find and stop it afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs Python signal handlers
        return
    previous = {sig: signal.getsignal(sig) for sig in _HELD}
    previous = {sig: handler for sig, handler in previous.items() if handler is not None}
    received: list[int] = []
    for sig in previous:
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in received:
            signal.raise_signal(sig)


def _zombie(pid: int) -> bool:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2:].split()[0] in ("Z", "X")
