"""The pause file (`backend.pause_file`): an operator's way to hold the server between rounds,
e.g. to restart SuperNodes safely."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from flayer.run.stops import stopping

log = logging.getLogger(__name__)


def pause_asked(pause: Path, server_round: int, warn: bool = True) -> bool:
    """Whether the pause file holds the server before this round. An empty file holds it
    before the next round, whenever that is; a file holding a round number r holds it before
    round r (and any later round), so a script can name the point without racing the server.
    Other content holds too (with a warning): holding is the safe reading of a pause file."""
    try:
        text = pause.read_text().strip()
    except FileNotFoundError:
        return False
    except OSError as exc:  # e.g. a directory: it exists, so hold
        if warn:
            log.warning("pause file %s unreadable (%s); holding", pause, exc)
        return True
    if not text:
        return True
    try:
        return server_round >= int(text)
    except ValueError:
        if warn:
            log.warning("pause file %s holds %r, not a round number; holding before round "
                        "%d", pause, text[:40], server_round)
        return True


def hold(pause_file: str | None, server_round: int) -> None:
    """Wait before a round while the pause file asks for it (and no stop is asked: the
    simulation's round loop, in a thread of its own, then goes on to leave)."""
    if not pause_file:
        return
    pause = Path(os.path.expanduser(pause_file))
    if pause_asked(pause, server_round):
        log.info("holding before round %d while %s exists", server_round, pause)
        while pause_asked(pause, server_round, warn=False) and stopping() is None:
            time.sleep(0.5)
