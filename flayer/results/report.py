"""Collects finished runs (run or multirun folders): one row per run, and a comparison that
groups runs differing only in their seed (mean ± std over seeds)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

RUN_COLUMNS = ["method", "dataset", "alpha", "seed", "best accuracy (round)", "final accuracy",
               "MB uploaded", "seconds"]
GROUP_COLUMNS = ["method", "dataset", "alpha", "seeds", "best accuracy", "final accuracy",
                 "MB uploaded", "seconds"]
# Settings that never make two runs different experiments.
IGNORED = {"seed", "progress", "cache_dir", "device", "backend"}


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


def load_run(path: Path) -> Run:
    summary = json.loads((path / "summary.json").read_text())
    settings: dict[str, Any] = {}
    if (path / "config.yaml").is_file():
        config = OmegaConf.to_container(OmegaConf.load(path / "config.yaml")) or {}
        settings = {k: v for k, v in _flatten(config).items()
                    if k.split(".", 1)[0] not in IGNORED}
    curve = []
    if (path / "metrics.csv").is_file():
        with open(path / "metrics.csv") as f:
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
                f"{k.removeprefix('strategy.')}={g.runs[0].settings.get(k)}" for k in differ
            ) + ")"
    return list(groups.values())


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _mean_std(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    arr = np.asarray([v for v in values if v is not None], dtype=float) * scale
    if arr.size == 0:
        return "-"
    if arr.size == 1:
        return f"{arr[0]:.{digits}f}"
    return f"{arr.mean():.{digits}f} ± {arr.std():.{digits}f}"


def run_row(s: dict[str, Any]) -> list[str]:
    return [
        str(s.get("method", "?")), str(s.get("dataset", "?")), str(s.get("alpha", "?")),
        str(s.get("seed", "?")),
        f"{_pct(s.get('best_accuracy'))} ({s.get('best_round', '-')})",
        _pct(s.get("final_accuracy")),
        f"{s.get('total_upload_bytes', 0) / 1e6:.1f}",
        f"{s.get('wall_seconds', 0):.0f}",
    ]


def group_row(g: Group) -> list[str]:
    ss = [r.summary for r in g.runs]
    first = ss[0]
    return [
        g.label, str(first.get("dataset", "?")), str(first.get("alpha", "?")),
        ",".join(str(s.get("seed", "?")) for s in ss),
        _mean_std([s.get("best_accuracy") for s in ss], 100),
        _mean_std([s.get("final_accuracy") for s in ss], 100),
        _mean_std([s.get("total_upload_bytes", 0) for s in ss], 1e-6, 1),
        _mean_std([s.get("wall_seconds", 0) for s in ss], 1.0, 0),
    ]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plot_groups(groups: list[Group], out: Path) -> None:
    """Accuracy per round, one curve per group (mean over seeds), the seed spread shaded."""
    from flayer.results.plots import MaxNLocator, plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for g in groups:
        rounds = sorted({r for run in g.runs for r, _ in run.curve})
        if not rounds:
            continue
        table = np.full((len(g.runs), len(rounds)), np.nan)
        for i, run in enumerate(g.runs):
            for r, acc in run.curve:
                table[i, rounds.index(r)] = acc
        mean = np.nanmean(table, axis=0)
        line, = ax.plot(rounds, mean, label=f"{g.label} (n={len(g.runs)})")
        if len(g.runs) > 1:
            ax.fill_between(rounds, np.nanmin(table, axis=0), np.nanmax(table, axis=0),
                            color=line.get_color(), alpha=0.2)
    ax.set_xlabel("round")
    ax.set_ylabel("personalized test accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
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
    groups = group_runs(runs)
    per_run = markdown_table(RUN_COLUMNS, [run_row(r.summary) for r in runs])
    compared = markdown_table(GROUP_COLUMNS, [group_row(g) for g in groups])
    if out_dir is None:
        common = Path(os.path.commonpath([str(p.resolve()) for p in run_paths]))
        out_dir = common if len(run_paths) > 1 else common.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    note = ("Accuracies in %, mean ± std over seeds (population std); best = best evaluated "
            "round, final = last round.")
    (out_dir / "comparison.md").write_text(f"{compared}\n\n{note}\n\n## Runs\n\n{per_run}\n")
    with open(out_dir / "comparison.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["group", "dataset", "alpha", "seeds", "best_accuracy_mean",
                         "best_accuracy_std", "final_accuracy_mean", "final_accuracy_std",
                         "upload_mb_mean", "seconds_mean", "runs"])
        for g in groups:
            ss = [r.summary for r in g.runs]
            best = [s.get("best_accuracy") or 0.0 for s in ss]
            final = [s.get("final_accuracy") or 0.0 for s in ss]
            writer.writerow([
                g.label, ss[0].get("dataset"), ss[0].get("alpha"),
                " ".join(str(s.get("seed")) for s in ss), np.mean(best), np.std(best),
                np.mean(final), np.std(final),
                np.mean([s.get("total_upload_bytes", 0) for s in ss]) / 1e6,
                np.mean([s.get("wall_seconds", 0) for s in ss]),
                " ".join(str(r.path) for r in g.runs),
            ])
    plot_groups(groups, out_dir / "comparison.png")
    text = f"## Runs\n\n{per_run}\n\n## Comparison\n\n{compared}\n\n{note}"
    return text, out_dir
