"""Finished runs read back from their folders (summary.json, config.yaml, metrics.csv), for the
report."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from flayer.util.errors import reading

# Settings that never make two runs different experiments.
IGNORED = {"seed", "progress", "cache_dir", "device", "backend"}
# settings added after runs were saved, at the value every earlier run had: a run that holds
# that value groups with the runs that lack the setting
ADDED = {"dataset.fraction": 1.0, "shift.name": "none", "new_clients": 0}
# settings that change nothing while another is at a value (no new clients: their epochs)
UNUSED = {"new_client_epochs": ("new_clients", 0)}
_NONE = object()
LEAVE_OUT = "repair the run folder, or leave it out of the report's paths"


@dataclass
class Run:
    path: Path
    summary: dict[str, Any]
    settings: dict[str, Any]  # the resolved config, flattened, without IGNORED keys
    curve: list[tuple[int, float]]  # (round, accuracy) of evaluated rounds


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


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}." if isinstance(value, dict) else
                            f"{prefix}{key}"))
    return out


def _unused(key: str, flat: dict[str, Any]) -> bool:
    """Whether the setting changes nothing in this run (`UNUSED`)."""
    other = UNUSED.get(key)
    return other is not None and flat.get(other[0], other[1]) == other[1]


def load_run(path: Path) -> Run:
    """A run folder's summary, settings and curve; DamagedFile naming a file that cannot be
    read as what the run wrote."""
    with reading(path / "summary.json", "a run's summary (a JSON object)", LEAVE_OUT):
        summary = dict(json.loads((path / "summary.json").read_text(encoding="utf-8")))
    settings: dict[str, Any] = {}
    if (path / "config.yaml").is_file():
        with reading(path / "config.yaml", "a run's config (YAML)", LEAVE_OUT,
                     also=(yaml.YAMLError,)):
            config = OmegaConf.to_container(OmegaConf.load(path / "config.yaml")) or {}
        flat = _flatten(config)
        settings = {k: v for k, v in flat.items()
                    if k.split(".", 1)[0] not in IGNORED and ADDED.get(k, _NONE) != v
                    and not _unused(k, flat)}
    curve = []
    if (path / "metrics.csv").is_file():
        with (reading(path / "metrics.csv", "a run's metrics (CSV)", LEAVE_OUT,
                      also=(csv.Error,)),
              open(path / "metrics.csv", newline="", encoding="utf-8") as f):
            curve = [(int(r["round"]), float(r["accuracy"])) for r in csv.DictReader(f)
                     if r["accuracy"] != ""]
    return Run(path=path, summary=summary, settings=settings, curve=curve)
