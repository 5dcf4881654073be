"""Names a config does not have, an option of a group or a setting, answered with the nearest
names it does have ("did you mean ...?"), in one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

from flayer.util.errors import ConfigError


class SettingError(ConfigError):
    """A ConfigError that words its own message (an unknown name, or a command line that
    cannot be composed), where ConfigError's says `bad setting X=V: rule`."""

    def __init__(self, setting: str, value: Any, message: str) -> None:
        super().__init__(setting, value, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def nearest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to `name` (at most n, only those about as close as the best)."""
    scored = sorted(((difflib.SequenceMatcher(None, name, k).ratio(), k) for k in known),
                    key=lambda item: -item[0])
    best = scored[0][0] if scored else 0.0
    return [k for score, k in scored[:n] if score >= max(0.6, best - 0.1)]


def _did_you_mean(near: Sequence[str]) -> str:
    return f"; did you mean {' or '.join(near)}?" if near else ""


def unknown_option(group: str, option: str, options: Sequence[str]) -> SettingError:
    """`group=option` names no option of the group."""
    return SettingError(group, option,
                        f"unknown {group} {option!r}{_did_you_mean(nearest(option, options))} "
                        f"(choose one of: {', '.join(options)})")


def _settings(node: Any) -> list[str]:
    """A schema node's settings; `name` is the group option's own, chosen as `group=name`."""
    return [f.name for f in fields(node) if f.name != "name"]


def _leaves(node: Any, prefix: str = "") -> Iterator[str]:
    for f in fields(node):
        value = getattr(node, f.name)
        if is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        elif f.name != "name":
            yield f"{prefix}{f.name}"


def unknown_setting(key: str, value: Any, cfg: Any) -> SettingError:
    """`key` (dotted) is no setting of the typed config `cfg`: name the nearest settings where
    the key goes astray, else settings of that name elsewhere (`alpha` -> `partition.alpha`)."""
    parts = key.split(".")
    node, depth = cfg, 0
    while depth < len(parts) - 1 and parts[depth] in {f.name for f in fields(node)}:
        child = getattr(node, parts[depth])
        if not is_dataclass(child):
            break
        node, depth = child, depth + 1
    head, wrong, rest = parts[:depth], parts[depth], parts[depth + 1:]
    known = _settings(node) if depth else [f.name for f in fields(node)]
    near = [".".join([*head, n, *rest]) for n in nearest(wrong, known)]
    if not near and not rest:
        near = [k for k in _leaves(cfg) if nearest(wrong, [k.rpartition(".")[2]])][:3]
    scope = f"{'.'.join(head)}={node.name}" if hasattr(node, "name") else ".".join(head)
    where = (f"settings of {scope}: {', '.join(known)}" if depth and known
             else f"{scope} has no settings" if depth
             else f"run-wide settings and groups: {', '.join(known)}")
    return SettingError(key, value, f"unknown setting {key!r}{_did_you_mean(near)} ({where})")


def extra_settings(cfg: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Keys of a typed config that its schema does not have (Hydra's `+key=value` adds them
    to a typed node, and OmegaConf keeps them as attributes), with their values."""
    names = [f.name for f in fields(cfg)]
    for key, value in vars(cfg).items():
        if key not in names:
            yield f"{prefix}{key}", value
    for name in names:
        value = getattr(cfg, name)
        if is_dataclass(value):
            yield from extra_settings(value, f"{prefix}{name}.")
