"""`python -m flayer.results.report PATH... [--out DIR]`: tables of finished runs.

Prints one row per run (method, dataset, alpha, seed, best accuracy (round), final accuracy,
MB uploaded, seconds) and a comparison in which runs that differ only in their seed are
grouped (mean ± std), ranked by best accuracy within each dataset and alpha. Writes
comparison.md, comparison.csv and comparison.png (accuracy per round, one curve per group in
the table's order, the seed spread shaded; with four groups or more a second panel zooms on
the leading half) into --out, by default the folder that holds the runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flayer.results.comparison import report  # the work; this module is the command line
from flayer.util.errors import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flayer.results.report", description=__doc__,
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
