"""How a run's set-up is named in tables and figure titles, from its summary: the same words in
accuracy.png, comparison.png and the report's tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def alpha_text(summary: dict[str, Any]) -> str:
    """Splits without a Dirichlet alpha (iid, pathological) have none: "-", not unknown."""
    alpha = summary.get("alpha")
    return "-" if alpha is None else str(alpha)


def value_text(summary: dict[str, Any], key: str) -> str:
    """A summary value as a table cell; "?" where an older summary lacks it."""
    value = summary.get(key)
    return "?" if value is None else str(value)


def shift_text(summary: dict[str, Any]) -> str | None:
    """The feature shift with what sets it: rotate(0°, 90°, 180°, 270°), noise(level 0.1);
    None for a run without one (summaries without a shift predate shifts: none)."""
    name = summary.get("shift")
    if name is None or name == "none":
        return None
    if summary.get("shift_angles") is not None:
        angles = ", ".join(f"{a:g}°" for a in summary["shift_angles"])
        return f"{name}({angles})"
    if summary.get("shift_level") is not None:
        return f"{name}(level {summary['shift_level']})"
    return str(name)


def dataset_text(summary: dict[str, Any]) -> str:
    """The dataset, and its shift where it has one: `fmnist`, `fmnist + rotate(0°, 180°)`, so
    that a shifted run never reads like a plain one."""
    shift = shift_text(summary)
    dataset = value_text(summary, "dataset")
    return dataset if shift is None else f"{dataset} + {shift}"


def split_text(summary: dict[str, Any]) -> str:
    """The partition with what sets its skew: dirichlet(α=0.1), pathological(2 classes)."""
    name = str(summary.get("partition", "?"))
    if summary.get("alpha") is not None:
        return f"{name}(α={summary['alpha']})"
    if summary.get("classes_per_client") is not None:
        return f"{name}({summary['classes_per_client']} classes)"
    return name


def _parts(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """dataset, split, clients, rounds: each a value and the word that follows it."""
    return [(dataset_text(summary), ""), (split_text(summary), ""),
            (value_text(summary, "num_clients"), " clients"),
            (value_text(summary, "num_rounds"), " rounds")]


def run_title(summary: dict[str, Any]) -> str:
    """One run: method · dataset · split · clients · rounds · seed."""
    return " · ".join([value_text(summary, "method"),
                       *(value + word for value, word in _parts(summary)),
                       f"seed {value_text(summary, 'seed')}"])


def setup_title(summaries: Sequence[dict[str, Any]]) -> str:
    """Several runs: each part of the set-up once, its values listed where runs differ
    (`20, 6 clients`)."""
    columns = zip(*(_parts(s) for s in summaries), strict=True)
    return " · ".join(", ".join(dict.fromkeys(value for value, _ in column)) + column[0][1]
                      for column in map(list, columns))
