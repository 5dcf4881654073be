"""How fast does run.py answer what needs no data and no model?

Times `run.py --help`, `run.py --cfg job`, a typo'd option, an unknown key and a bad value, each
run several times in an empty folder (wall time, median), then lists the imports that take
the most time on the bad value's path (`python -X importtime`). The machine's load average is
printed with the figures: on a busy machine every figure grows.

    python bench/startup.py [--repeats 5] [--root DIR]

`--root` times another checkout's run.py (e.g. an older commit unpacked with `git archive`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "--help": ["--help"],
    "--cfg job": ["--cfg", "job"],
    "typo'd option": ["strategy=fedavgg"],
    "unknown key": ["num_client=3"],
    "bad value": ["num_rounds=-1"],
}
HEAVY = ("torch", "flwr", "datasets", "flwr_datasets", "ray")


def timed(run_py: Path, args: list[str]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="flayer-startup-") as cwd:
        start = time.perf_counter()
        out = subprocess.run([sys.executable, str(run_py), *args], cwd=cwd,
                             capture_output=True, text=True)
        return time.perf_counter() - start, out.returncode


def import_times(run_py: Path, args: list[str]) -> list[tuple[float, str, bool]]:
    """Every import: cumulative seconds, module, whether the program itself imported it."""
    with tempfile.TemporaryDirectory(prefix="flayer-startup-") as cwd:
        out = subprocess.run([sys.executable, "-X", "importtime", str(run_py), *args], cwd=cwd,
                             capture_output=True, text=True)
    found = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        # one leading space: imported by the program itself, more: by another module
        found.append((int(cumulative) / 1e6, name.strip(), not name.startswith("  ")))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    run_py = args.root.resolve() / "run.py"
    print(f"{run_py}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")
    print(f"{'command':<16}{'median s':>10}{'min s':>8}{'max s':>8}{'exit':>6}")
    for label, case in CASES.items():
        times, codes = zip(*(timed(run_py, case) for _ in range(args.repeats)), strict=True)
        print(f"{label:<16}{statistics.median(times):>10.2f}{min(times):>8.2f}"
              f"{max(times):>8.2f}{','.join(sorted({str(c) for c in codes})):>6}")
    found = import_times(run_py, CASES["bad value"])
    top = sorted((seconds, name) for seconds, name, first in found if first)[::-1]
    heavy = sorted({name for _, name, _ in found if name in HEAVY})
    print(f"\nimports of `run.py {' '.join(CASES['bad value'])}`: "
          f"{sum(seconds for seconds, _ in top):.2f} s in all; heavy ones among them: "
          f"{', '.join(heavy) or 'none'}")
    print("  run.py's own imports (seconds, with all they import):")
    for seconds, name in top[:5]:
        print(f"    {seconds:6.2f}  {name}")
    print("  the largest imports at any depth:")
    for seconds, name, _ in sorted(found, reverse=True)[:10]:
        print(f"    {seconds:6.2f}  {name}")


if __name__ == "__main__":
    main()
