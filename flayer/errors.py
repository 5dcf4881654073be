"""Errors a user can act on."""

from __future__ import annotations

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
