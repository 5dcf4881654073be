"""run.log: each run folder's own log, what a user reads after the run.

It holds flayer's log lines of the run, from the process that runs its rounds (the
simulation's driver, or the ServerApp of a deployment), at the level the `flayer` logger is
set to (INFO under run.py and the apps): a continuation ("continuing ... after round"), clients
that failed, checkpoints that could not be used, the results. Besides, lines the terminal says
in its own words go to this file alone (`note`): which run started, and where a run that
stopped early stands. A continued run appends to the same file.

Hydra's own job log (also run.log) is switched off (conf/hydra/job_logging/flayer.yaml): it
exists only under run.py, and it sits beside the console handler, so it can hold nothing that
the terminal did not show already."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_FILE = "run.log"
FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # as run.py's console lines
LOGGERS = ("flayer", "baselines")

_notes = logging.getLogger("flayer.run.notes")


def note(message: str, *args: object) -> None:
    """A line for run.log alone (nothing where no run log is open)."""
    if _notes.handlers:
        _notes.info(message, *args)


def note_failure(message: str) -> None:
    """The traceback of the exception being handled, for run.log alone."""
    if _notes.handlers:
        _notes.error(message, exc_info=True)


@contextmanager
def run_log(run_dir: Path) -> Iterator[None]:
    """Within: flayer's log lines (INFO and above, as far as its loggers let them through)
    and the notes are appended to run_dir/run.log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FORMAT))
    # set here, not once: a logging set-up (Hydra's) resets the children of the loggers it
    # configures, `flayer`'s among them
    _notes.propagate = False  # for the file alone
    _notes.setLevel(logging.INFO)
    loggers = [logging.getLogger(name) for name in LOGGERS] + [_notes]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()
