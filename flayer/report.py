"""`python -m flayer.report PATH...`: one markdown table row per finished run.

Accuracies are personalized test accuracies in percent; "best" is the best evaluated round
(the paper's and PFLlib's convention), "final" the last one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flayer.results.report import report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flayer.report", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="run or multirun folders")
    args = parser.parse_args(argv)
    try:
        print(report(args.paths))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
