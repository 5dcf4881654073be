"""The numbers of a comparison: runs that differ only in their seed form a group, and each
group's accuracy, upload and time become a mean ± std over its seeds (`GroupStats`), computed
once here and then rendered as tables (`flayer.results.tables`) and a figure
(`flayer.results.plots`), so that they cannot disagree. A run with no evaluated round has no
accuracy: it is left out of the accuracy statistics, never counted as 0%."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flayer.results.runs import ADDED, Run
from flayer.results.setup import alpha_text, dataset_text, value_text


@dataclass
class Group:
    label: str
    runs: list[Run] = field(default_factory=list)


@dataclass(frozen=True)
class Stat:
    """Mean and population std over the values present; n says how many there were, so a
    missing value (a run never evaluated) is visible instead of silently becoming 0."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        present = np.asarray([v for v in values if v is not None], dtype=float)
        if present.size == 0:
            return cls(None, None, 0)
        return cls(float(present.mean()), float(present.std()), int(present.size))

    def text(self, scale: float = 1.0, digits: int = 2) -> str:
        """The markdown cell: `mean ± std`, the mean alone for one value, `-` for none."""
        if self.mean is None or self.std is None:
            return "-"
        if self.n == 1:
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"


@dataclass(frozen=True)
class Curve:
    """Accuracy per round over a group's runs: mean, and min/max as the seed spread."""

    rounds: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]


@dataclass(frozen=True)
class GroupStats:
    """Everything the comparison files say about one group, computed once."""

    label: str
    dataset: str
    alpha: str
    clients: str  # num_clients ("?" where the summaries lack it)
    rounds: str  # num_rounds
    seeds: list[str]
    best_accuracy: Stat  # fractions in [0, 1], over the runs with an evaluated round
    final_accuracy: Stat
    upload_mb: Stat
    seconds: Stat
    runs: list[Path]
    curve: Curve | None  # None when no run of the group evaluated a round
    # the clients never trained (`new_clients`), over the runs that have them
    best_new_accuracy: Stat = Stat(None, None, 0)
    final_new_accuracy: Stat = Stat(None, None, 0)
    with_new: bool = False  # whether the group's runs hold out new clients

    @property
    def with_accuracy(self) -> int:
        """How many of the group's runs have an accuracy (an evaluated round)."""
        return self.best_accuracy.n


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs with equal settings but the seed form one group; labels name the method and,
    where one method appears in several groups, the settings that tell them apart."""
    groups: dict[str, Group] = {}
    for run in runs:
        key = json.dumps(run.settings or {"path": str(run.path)}, sort_keys=True, default=str)
        groups.setdefault(key, Group(label=str(run.summary.get("method", "?")))).runs.append(run)
    by_method: dict[str, list[Group]] = {}
    for g in groups.values():
        by_method.setdefault(g.label, []).append(g)
    for method, same in by_method.items():
        if len(same) < 2:
            continue
        keys = sorted({k for g in same for k in g.runs[0].settings})
        differ = [k for k in keys
                  if len({json.dumps(g.runs[0].settings.get(k), default=str) for g in same}) > 1]
        for g in same:
            g.label = method + " (" + ", ".join(
                f"{k.removeprefix('strategy.')}={g.runs[0].settings.get(k, ADDED.get(k))}"
                for k in differ
            ) + ")"
    return list(groups.values())


def _curve(runs: Sequence[Run]) -> Curve | None:
    rounds = sorted({r for run in runs for r, _ in run.curve})
    if not rounds:
        return None
    column = {r: i for i, r in enumerate(rounds)}
    table = np.full((len(runs), len(rounds)), np.nan)
    for i, run in enumerate(runs):
        for r, acc in run.curve:
            table[i, column[r]] = acc
    return Curve(rounds=rounds, mean=np.nanmean(table, axis=0).tolist(),
                 low=np.nanmin(table, axis=0).tolist(), high=np.nanmax(table, axis=0).tolist())


def group_stats(group: Group) -> GroupStats:
    """The one place where a group's numbers are computed."""
    ss = [r.summary for r in group.runs]
    return GroupStats(
        label=group.label,
        dataset=dataset_text(ss[0]),
        alpha=alpha_text(ss[0]),
        clients=value_text(ss[0], "num_clients"),
        rounds=value_text(ss[0], "num_rounds"),
        seeds=[value_text(s, "seed") for s in ss],
        best_accuracy=Stat.of(s.get("best_accuracy") for s in ss),
        final_accuracy=Stat.of(s.get("final_accuracy") for s in ss),
        upload_mb=Stat.of(s.get("total_upload_bytes", 0) / 1e6 for s in ss),
        seconds=Stat.of(s.get("wall_seconds", 0) for s in ss),
        runs=[r.path for r in group.runs],
        curve=_curve(group.runs),
        best_new_accuracy=Stat.of(s.get("best_new_accuracy") for s in ss),
        final_new_accuracy=Stat.of(s.get("final_new_accuracy") for s in ss),
        with_new=any("final_new_accuracy" in s for s in ss),
    )


def _count(text: str) -> float:
    return float(text) if text.isdigit() else float("inf")


def ranked(stats: list[GroupStats]) -> list[GroupStats]:
    """The order of the comparison table and the plot's legend: by dataset, alpha, clients
    and rounds (one set-up after the other), then best accuracy, highest first (groups
    without an accuracy last, in the order read)."""
    def key(g: GroupStats) -> tuple[str, str, float, float, float]:
        best = g.best_accuracy.mean
        return (g.dataset, g.alpha, _count(g.clients), _count(g.rounds),
                -best if best is not None else float("inf"))

    return sorted(stats, key=key)
