"""Collects finished runs (run or multirun folders): one row per run, and a comparison that
groups runs differing only in their seed (mean ± std over seeds), ranked by best accuracy
within each dataset and alpha.

The group statistics are computed once (`GroupStats`) and then rendered three times
(comparison.md, comparison.csv, comparison.png), so the three files cannot disagree. A run
with no evaluated round has no accuracy: it is left out of the accuracy statistics, never
counted as 0%.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import OmegaConf

from flayer.util.errors import reading

RUN_COLUMNS = ["method", "dataset", "alpha", "seed", "best accuracy (round)", "final accuracy",
               "MB uploaded", "seconds"]
GROUP_COLUMNS = ["method", "dataset", "alpha", "seeds", "best accuracy", "final accuracy",
                 "MB uploaded", "seconds"]
CSV_COLUMNS = ["group", "dataset", "alpha", "seeds", "runs_with_accuracy",
               "best_accuracy_mean", "best_accuracy_std", "final_accuracy_mean",
               "final_accuracy_std", "upload_mb_mean", "upload_mb_std", "seconds_mean",
               "seconds_std", "runs"]
NOTE = ("Accuracies in %, mean ± std over seeds (population std); best = best evaluated "
        "round, final = last evaluated round. A run with no evaluated round has no accuracy: "
        "it is left out of the accuracy mean (marked `n=k of m` where only k of a group's m "
        "runs have one; comparison.csv's runs_with_accuracy column), not counted as 0%.")
# Settings that never make two runs different experiments.
IGNORED = {"seed", "progress", "cache_dir", "device", "backend"}
# settings added after runs were saved, at the value every earlier run had: a run that holds
# that value groups with the runs that lack the setting
ADDED = {"dataset.fraction": 1.0}
_NONE = object()


@dataclass
class Run:
    path: Path
    summary: dict[str, Any]
    settings: dict[str, Any]  # the resolved config, flattened, without IGNORED keys
    curve: list[tuple[int, float]]  # (round, accuracy) of evaluated rounds


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
    seeds: list[str]
    best_accuracy: Stat  # fractions in [0, 1], over the runs with an evaluated round
    final_accuracy: Stat
    upload_mb: Stat
    seconds: Stat
    runs: list[Path]
    curve: Curve | None  # None when no run of the group evaluated a round

    @property
    def with_accuracy(self) -> int:
        """How many of the group's runs have an accuracy (an evaluated round)."""
        return self.best_accuracy.n


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


LEAVE_OUT = "repair the run folder, or leave it out of the report's paths"


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
        settings = {k: v for k, v in _flatten(config).items()
                    if k.split(".", 1)[0] not in IGNORED and ADDED.get(k, _NONE) != v}
    curve = []
    if (path / "metrics.csv").is_file():
        with (reading(path / "metrics.csv", "a run's metrics (CSV)", LEAVE_OUT,
                      also=(csv.Error,)),
              open(path / "metrics.csv", newline="", encoding="utf-8") as f):
            curve = [(int(r["round"]), float(r["accuracy"])) for r in csv.DictReader(f)
                     if r["accuracy"] != ""]
    return Run(path=path, summary=summary, settings=settings, curve=curve)


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


def _alpha(summary: dict[str, Any]) -> str:
    # Splits without a Dirichlet alpha (iid, pathological) have none: "-", not unknown.
    alpha = summary.get("alpha")
    return "-" if alpha is None else str(alpha)


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
        dataset=str(ss[0].get("dataset", "?")),
        alpha=_alpha(ss[0]),
        seeds=[str(s.get("seed", "?")) for s in ss],
        best_accuracy=Stat.of(s.get("best_accuracy") for s in ss),
        final_accuracy=Stat.of(s.get("final_accuracy") for s in ss),
        upload_mb=Stat.of(s.get("total_upload_bytes", 0) / 1e6 for s in ss),
        seconds=Stat.of(s.get("wall_seconds", 0) for s in ss),
        runs=[r.path for r in group.runs],
        curve=_curve(group.runs),
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def run_row(s: dict[str, Any]) -> list[str]:
    return [
        str(s.get("method", "?")), str(s.get("dataset", "?")), _alpha(s),
        str(s.get("seed", "?")),
        f"{_pct(s.get('best_accuracy'))} ({s.get('best_round', '-')})",
        _pct(s.get("final_accuracy")),
        f"{s.get('total_upload_bytes', 0) / 1e6:.1f}",
        f"{s.get('wall_seconds', 0):.0f}",
    ]


def _accuracy_cell(stat: Stat, runs: int) -> str:
    text = stat.text(100)
    return text if stat.n in (0, runs) else f"{text} (n={stat.n} of {runs})"


def group_row(g: GroupStats) -> list[str]:
    """The comparison table's markdown row."""
    return [
        g.label, g.dataset, g.alpha, ",".join(g.seeds),
        _accuracy_cell(g.best_accuracy, len(g.runs)),
        _accuracy_cell(g.final_accuracy, len(g.runs)),
        g.upload_mb.text(1.0, 1),
        g.seconds.text(1.0, 0),
    ]


def csv_row(g: GroupStats) -> list[Any]:
    """The comparison.csv row: raw numbers (accuracy as a fraction), empty where none."""
    def raw(x: float | None) -> float | str:
        return "" if x is None else x

    return [
        g.label, g.dataset, g.alpha, " ".join(g.seeds), g.with_accuracy,
        raw(g.best_accuracy.mean), raw(g.best_accuracy.std),
        raw(g.final_accuracy.mean), raw(g.final_accuracy.std),
        raw(g.upload_mb.mean), raw(g.upload_mb.std), raw(g.seconds.mean), raw(g.seconds.std),
        " ".join(str(p) for p in g.runs),
    ]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(stats: list[GroupStats], out: Path) -> None:
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(csv_row(g) for g in stats)


def ranked(stats: list[GroupStats]) -> list[GroupStats]:
    """The order of the comparison table and the plot's legend: by dataset and alpha, then
    best accuracy, highest first (groups without an accuracy last, in the order read)."""
    def key(g: GroupStats) -> tuple[str, str, float]:
        best = g.best_accuracy.mean
        return (g.dataset, g.alpha, -best if best is not None else float("inf"))

    return sorted(stats, key=key)


# Curves needed to tell apart up to 20 groups: 10 colours, each once solid and once dashed.
STYLES = [(colour, dash) for dash in ("-", "--") for colour in (f"C{i}" for i in range(10))]
ZOOM_FROM = 4  # groups from which a second panel zooms on the leading half


def zoom_range(curves: list[Curve]) -> tuple[float, float]:
    """Accuracy range of the zoom panel: from a point below the median final accuracy to just
    above the highest curve, so that the leading half of the methods fills the panel."""
    finals = sorted(c.mean[-1] for c in curves)
    low = finals[len(finals) // 2] - 0.01
    high = max(max(c.high) for c in curves) + 0.005
    return max(0.0, low), min(1.0, high)


def plot_groups(stats: list[GroupStats], out: Path) -> None:
    """Accuracy per round, one curve per group (mean over seeds), the seed spread shaded;
    from ZOOM_FROM groups on, a second panel zooms on the leading half, where the
    personalized methods sit close together. The legend follows the table's order."""
    from flayer.results.plots import MaxNLocator, plt

    drawn = [(g, g.curve) for g in ranked(stats) if g.curve is not None]
    zoom = len(drawn) >= ZOOM_FROM
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(14 if zoom else 8, 5.5),
                             squeeze=False)
    panels = list(axes[0])
    for ax in panels:
        for i, (g, curve) in enumerate(drawn):
            colour, dash = STYLES[i % len(STYLES)]
            ax.plot(curve.rounds, curve.mean, color=colour, linestyle=dash,
                    label=f"{g.label} (n={len(g.runs)})")
            if len(g.runs) > 1:
                ax.fill_between(curve.rounds, curve.low, curve.high, color=colour, alpha=0.2)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    panels[0].set_ylabel("personalized test accuracy")
    if zoom:
        curves = [c for _, c in drawn]
        panels[1].set_ylim(*zoom_range(curves))
        panels[1].set_xlim(max(c.rounds[-1] for c in curves) / 2, None)
        panels[1].set_title("leading half, second half of the rounds", fontsize="medium")
    if drawn:
        panels[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:  # say so rather than draw an empty legend
        panels[0].text(0.5, 0.5, "no evaluated round", ha="center", va="center",
                       transform=panels[0].transAxes)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def report(paths: Iterable[Path], out_dir: Path | None = None) -> tuple[str, Path]:
    """Print-ready tables; writes comparison.md/.csv/.png into out_dir (default: the folder
    that holds all the runs read). Returns (text, out_dir)."""
    run_paths = find_runs(list(paths))
    if not run_paths:
        raise FileNotFoundError("no finished runs (folders with summary.json) under the paths")
    runs = [load_run(p) for p in run_paths]
    stats = ranked([group_stats(g) for g in group_runs(runs)])
    per_run = markdown_table(RUN_COLUMNS, [run_row(r.summary) for r in runs])
    compared = markdown_table(GROUP_COLUMNS, [group_row(g) for g in stats])
    if out_dir is None:
        common = Path(os.path.commonpath([str(p.resolve()) for p in run_paths]))
        out_dir = common if len(run_paths) > 1 else common.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.md").write_text(f"{compared}\n\n{NOTE}\n\n## Runs\n\n{per_run}\n")
    write_csv(stats, out_dir / "comparison.csv")
    plot_groups(stats, out_dir / "comparison.png")
    text = f"## Runs\n\n{per_run}\n\n## Comparison\n\n{compared}\n\n{NOTE}"
    return text, out_dir
