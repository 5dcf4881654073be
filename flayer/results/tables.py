"""The report's tables, rendered from the runs' summaries and the group statistics: markdown
(printed, and comparison.md) and comparison.csv (raw numbers)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from flayer.results.setup import alpha_text, dataset_text, value_text
from flayer.results.statistics import GroupStats, Stat

RUN_COLUMNS = ["method", "dataset", "alpha", "clients", "rounds", "seed",
               "best accuracy (round)", "final accuracy", "MB uploaded", "seconds"]
GROUP_COLUMNS = ["method", "dataset", "alpha", "clients", "rounds", "seeds", "best accuracy",
                 "final accuracy", "MB uploaded", "seconds"]
CSV_COLUMNS = ["group", "dataset", "alpha", "num_clients", "num_rounds", "seeds",
               "runs_with_accuracy", "best_accuracy_mean", "best_accuracy_std",
               "final_accuracy_mean", "final_accuracy_std", "upload_mb_mean", "upload_mb_std",
               "seconds_mean", "seconds_std", "runs"]
# only where some run holds out new clients (`new_clients`): their accuracy
NEW_RUN_COLUMNS = ["new clients: best (round)", "new clients: final"]
NEW_GROUP_COLUMNS = ["new clients: best", "new clients: final"]
NEW_CSV_COLUMNS = ["new_best_accuracy_mean", "new_best_accuracy_std",
                   "new_final_accuracy_mean", "new_final_accuracy_std"]
NEW_NOTE = ("New clients: the clients a run kept out of training (`new_clients`), each "
            "personalizing the global model of an evaluated round as its method does for a "
            "client that arrives late; accuracy over them, the other columns over the clients "
            "that trained; `-` for a run without new clients.")
NOTE = ("Accuracies in %, mean ± std over seeds (population std); best = best evaluated "
        "round, final = last evaluated round. A run with no evaluated round has no accuracy: "
        "it is left out of the accuracy mean (marked `n=k of m` where only k of a group's m "
        "runs have one; comparison.csv's runs_with_accuracy column), not counted as 0%. "
        "clients and rounds are the run's num_clients and num_rounds (a run that stopped "
        "early shows `done of planned` rounds).")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _rounds(s: dict[str, Any]) -> str:
    """The planned rounds; `k of n` for a run that stopped after round k."""
    planned, done = value_text(s, "num_rounds"), s.get("rounds_completed")
    stopped = done is not None and s.get("complete") is False and str(done) != planned
    return f"{done} of {planned}" if stopped else planned


def run_row(s: dict[str, Any], new: bool = False) -> list[str]:
    """One run's row of the per-run table; with `new` the new clients' cells."""
    cells = [
        value_text(s, "method"), dataset_text(s), alpha_text(s),
        value_text(s, "num_clients"), _rounds(s), value_text(s, "seed"),
        f"{_pct(s.get('best_accuracy'))} ({s.get('best_round', '-')})",
        _pct(s.get("final_accuracy")),
        f"{s.get('total_upload_bytes', 0) / 1e6:.1f}",
        f"{s.get('wall_seconds', 0):.0f}",
    ]
    if new:
        cells += [f"{_pct(s.get('best_new_accuracy'))} ({s.get('best_new_round', '-')})"
                  if "best_new_accuracy" in s else "-", _pct(s.get("final_new_accuracy"))]
    return cells


def _accuracy_cell(stat: Stat, runs: int) -> str:
    text = stat.text(100)
    return text if stat.n in (0, runs) else f"{text} (n={stat.n} of {runs})"


def group_row(g: GroupStats, new: bool = False) -> list[str]:
    """The comparison table's markdown row; with `new` the new clients' cells."""
    cells = [
        g.label, g.dataset, g.alpha, g.clients, g.rounds, ",".join(g.seeds),
        _accuracy_cell(g.best_accuracy, len(g.runs)),
        _accuracy_cell(g.final_accuracy, len(g.runs)),
        g.upload_mb.text(1.0, 1),
        g.seconds.text(1.0, 0),
    ]
    if new:
        cells += [_accuracy_cell(g.best_new_accuracy, len(g.runs)),
                  _accuracy_cell(g.final_new_accuracy, len(g.runs))]
    return cells


def has_new(stats: list[GroupStats]) -> bool:
    """Whether some run holds out new clients: then the tables show their accuracy."""
    return any(g.with_new for g in stats)


def csv_row(g: GroupStats, new: bool = False) -> list[Any]:
    """The comparison.csv row: raw numbers (accuracy as a fraction), empty where none."""
    def raw(x: float | None) -> float | str:
        return "" if x is None else x

    cells = [
        g.label, g.dataset, g.alpha, g.clients, g.rounds, " ".join(g.seeds), g.with_accuracy,
        raw(g.best_accuracy.mean), raw(g.best_accuracy.std),
        raw(g.final_accuracy.mean), raw(g.final_accuracy.std),
        raw(g.upload_mb.mean), raw(g.upload_mb.std), raw(g.seconds.mean), raw(g.seconds.std),
        " ".join(str(p) for p in g.runs),
    ]
    if new:
        cells += [raw(g.best_new_accuracy.mean), raw(g.best_new_accuracy.std),
                  raw(g.final_new_accuracy.mean), raw(g.final_new_accuracy.std)]
    return cells


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(stats: list[GroupStats], out: Path) -> None:
    new = has_new(stats)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS + (NEW_CSV_COLUMNS if new else []))
        writer.writerows(csv_row(g, new) for g in stats)
