"""Collects finished runs (run or multirun folders) into one table."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

COLUMNS = ["method", "dataset", "alpha", "seed", "best accuracy (round)", "final accuracy",
           "MB uploaded", "seconds"]


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Every run directory (one holding summary.json) at or below the given paths."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"no such run or multirun folder: {path}")
        if (path / "summary.json").is_file():
            found.append(path)
        else:
            found.extend(sorted(p.parent for p in path.rglob("summary.json")))
    return sorted(set(found), key=lambda p: (str(p.parent), _job_order(p)))


def _job_order(path: Path) -> tuple[int, str]:
    head = path.name.split("-", 1)[0]
    return (int(head), path.name) if head.isdigit() else (1 << 30, path.name)


def load_summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "summary.json").read_text())


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def row_of(summary: dict[str, Any]) -> list[str]:
    return [
        str(summary.get("method", "?")),
        str(summary.get("dataset", "?")),
        str(summary.get("alpha", "?")),
        str(summary.get("seed", "?")),
        f"{_pct(summary.get('best_accuracy'))} ({summary.get('best_round', '-')})",
        _pct(summary.get("final_accuracy")),
        f"{summary.get('total_upload_bytes', 0) / 1e6:.1f}",
        f"{summary.get('wall_seconds', 0):.0f}",
    ]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def report(paths: Iterable[Path]) -> str:
    runs = find_runs(paths)
    if not runs:
        raise FileNotFoundError("no finished runs (folders with summary.json) under the paths")
    return markdown_table(COLUMNS, [row_of(load_summary(r)) for r in runs])
