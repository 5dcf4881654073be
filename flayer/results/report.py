"""`python -m flayer.results.report PATH... [--out DIR]`: tables of finished runs.

Prints one row per run (method, dataset, alpha, clients, rounds, seed, best accuracy (round),
final accuracy, MB uploaded, seconds; where some run holds out new clients, their best and final
accuracy) and a comparison in which runs that differ only in their
seed are grouped (mean ± std), ranked by best accuracy within each dataset, alpha, number of
clients and of rounds. Writes comparison.md, comparison.csv and comparison.png (accuracy per
round, one curve per group in the table's order, the seed spread shaded, titled with the
set-up; a second panel shows the second half of the rounds on its own range, with four groups
or more only the leading half of the groups) into --out, by default the folder that holds the
runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flayer.results.plots import plot_groups
from flayer.results.runs import find_runs, load_run
from flayer.results.setup import setup_title
from flayer.results.statistics import group_runs, group_stats, ranked
from flayer.results.tables import (
    GROUP_COLUMNS,
    NEW_GROUP_COLUMNS,
    NEW_NOTE,
    NEW_RUN_COLUMNS,
    NOTE,
    RUN_COLUMNS,
    group_row,
    has_new,
    markdown_table,
    run_row,
    write_csv,
)
from flayer.util.commands import module_command
from flayer.util.errors import DataError


@dataclass
class Comparison:
    """The finished runs under some paths, grouped and ranked, as tables and a figure."""

    run_paths: list[Path]
    per_run: str  # markdown, one row per run
    compared: str  # markdown, one row per group (mean ± std over seeds)
    stats: list
    title: str
    note: str = NOTE  # what the tables' numbers are

    def plot(self, out: Path) -> None:
        plot_groups(self.stats, out, self.title)


def compare(paths: Iterable[Path]) -> Comparison:
    """Read the finished runs under the paths and compare them (FileNotFoundError where there
    are none); nothing is written."""
    run_paths = find_runs(list(paths))
    if not run_paths:
        raise FileNotFoundError("no finished runs (folders with summary.json) under the paths")
    runs = [load_run(p) for p in run_paths]
    stats = ranked([group_stats(g) for g in group_runs(runs)])
    new = has_new(stats)
    run_columns = RUN_COLUMNS + (NEW_RUN_COLUMNS if new else [])
    group_columns = GROUP_COLUMNS + (NEW_GROUP_COLUMNS if new else [])
    return Comparison(run_paths=run_paths,
                      per_run=markdown_table(run_columns,
                                             [run_row(r.summary, new) for r in runs]),
                      compared=markdown_table(group_columns, [group_row(g, new) for g in stats]),
                      stats=stats, title=setup_title([r.summary for r in runs]),
                      note=f"{NOTE} {NEW_NOTE}" if new else NOTE)


def report(paths: Iterable[Path], out_dir: Path | None = None) -> tuple[str, Path]:
    """Print-ready tables; writes comparison.md/.csv/.png into out_dir (default: the folder
    that holds all the runs read). Returns (text, out_dir)."""
    c = compare(paths)
    if out_dir is None:
        common = Path(os.path.commonpath([str(p.resolve()) for p in c.run_paths]))
        out_dir = common if len(c.run_paths) > 1 else common.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.md").write_text(f"{c.compared}\n\n{c.note}\n\n## Runs\n\n{c.per_run}\n")
    write_csv(c.stats, out_dir / "comparison.csv")
    c.plot(out_dir / "comparison.png")
    text = f"## Runs\n\n{c.per_run}\n\n## Comparison\n\n{c.compared}\n\n{c.note}"
    return text, out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=module_command("flayer.results.report"),
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run or multirun folders")
    parser.add_argument("--out", type=Path, default=None, help="where to write comparison.*")
    args = parser.parse_args(argv)
    try:
        text, out = report(args.paths, args.out)
    except (FileNotFoundError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    print(f"\nwrote {out / 'comparison.md'}, comparison.csv, comparison.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
