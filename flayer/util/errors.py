"""Errors a user can act on."""

from __future__ import annotations

import pickle
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class ConfigError(ValueError):
    """A setting has a value that is not allowed; names the setting, the value and the rule."""

    def __init__(self, setting: str, value: Any, allowed: str) -> None:
        self.setting, self.value, self.allowed = setting, value, allowed
        super().__init__(f"bad setting {setting}={value!r}: {allowed}")


def require(ok: bool, setting: str, value: Any, allowed: str) -> None:
    """Raise ConfigError(setting, value, allowed) unless ok."""
    if not ok:
        raise ConfigError(setting, value, allowed)


class DataError(RuntimeError):
    """The data cannot be had or cannot be split as asked."""


class RunError(DataError):
    """The run cannot go on: what it stands on (its data, a client's stored state) is damaged
    or gone. Not a client's failure: its results would be wrong without that, not just
    smaller."""


class DamagedFile(DataError):
    """A file the run reads is missing, cut short, of another format or of the wrong shape:
    names the file, what is wrong with it and what to do."""

    def __init__(self, file: object, problem: str, fix: str) -> None:
        self.file, self.problem, self.fix = file, problem, fix
        super().__init__(f"{file}: {problem}; {fix}")


# What reading a damaged file raises, whichever reader meets it: numpy and zipfile (cut short,
# not an npz, a missing entry), gzip and zlib (a truncated or corrupt stream), pickle, text
# decoding, and readers that check shapes with ValueError/IndexError.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, ValueError, KeyError, IndexError, TypeError, zlib.error,
    zipfile.BadZipFile, pickle.UnpicklingError,
)


@contextmanager
def reading(file: object, what: str, fix: str,
            also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Within: a damaged `file` (any of READ_ERRORS, or of the reader's own errors `also`)
    raises DamagedFile saying it cannot be read as `what`, with the reader's own words and
    `fix`; DataErrors pass unchanged."""
    try:
        yield
    except DataError:
        raise
    except (*READ_ERRORS, *also) as exc:
        raise DamagedFile(file, f"cannot be read as {what} ({_reason(exc)})", fix) from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
