"""Stop trials: start `run.py` runs, send each SIGINT or SIGTERM at a chosen moment, and
print for each the exit code, whether accuracy.png is a whole PNG, whether the resume line
came, how long the stop took, how many lines the run printed and how many of its processes
were left. A busy loop per core (--load) and several runs at once (--parallel) load the
machine as a user's would be.

    python bench/stops.py --load 2 --parallel 2 start+8 ray+0 row0 row1+3:TERM ...

A moment is `start+S` (S seconds after the launch), `config+S` (after the run folder is
written: Ray starting), `ray+S` (after the run's executor actors are up: round 0), `rowK+S`
(S seconds after round K's row is written; `rowK`: at once, while round K's checkpoint is
written); `:TERM` sends SIGTERM instead of SIGINT.
--group sends the signal to the run's process group, as Ctrl-C in a terminal does.
Everything after `--` goes to run.py (default: a FLAYER run on 6 clients, 4 rounds).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flayer.deploy.processes import members  # noqa: E402
from flayer.util.commands import run_command  # noqa: E402

DEFAULT_RUN = ["num_clients=6", "num_rounds=4"]
# the stop line of a run started as `trial` starts it (this interpreter, in ROOT)
RESUME_LINE = f"continue with: {run_command('resume=', cwd=ROOT)}"
NOTHING_LINE = "before the run started; nothing was written"  # a stop before its folder
ACTOR = b"ray::ClientAppActor"


def rows(run_dir: Path) -> int:
    try:
        return max(0, len((run_dir / "metrics.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0


def actors_up(pid: int) -> bool:
    for p in members({pid}) - {pid}:
        try:
            if Path(f"/proc/{p}/cmdline").read_bytes().startswith(ACTOR):
                return True
        except OSError:
            pass
    return False


def whole_png(file: Path) -> bool:
    try:
        data = file.read_bytes()
    except OSError:
        return False
    return data[:8] == b"\x89PNG\r\n\x1a\n" and data[-8:-4] == b"IEND"


def wait_for(check, proc: subprocess.Popen, timeout: float = 1800.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None and not check():
        time.sleep(0.05)


def trial(name: str, spec: str, args: argparse.Namespace, out: Path) -> dict:
    moment, _, which = spec.partition(":")
    sig = signal.SIGTERM if which == "TERM" else signal.SIGINT
    kind, _, delay = moment.partition("+")
    run_dir = out / name
    log_path = out / f"{name}.log"
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={run_dir}",
                                 "progress=false", *args.run], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        if kind == "config":
            wait_for(lambda: (run_dir / "config.yaml").is_file(), proc)
        elif kind == "ray":
            wait_for(lambda: actors_up(proc.pid), proc)
        elif kind.startswith("row"):
            k = int(kind[3:])
            wait_for(lambda: rows(run_dir) > k, proc)
        time.sleep(float(delay or 0))
        at, seen = time.monotonic() - t0, rows(run_dir)
        if proc.poll() is None:
            (os.killpg if args.group else os.kill)(proc.pid, sig)
        sent = time.monotonic()
        try:
            code: int | str = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            code = "hang"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        took = time.monotonic() - sent
    end = time.monotonic() + 15  # the run's Ray processes end with it
    while members({proc.pid}) and time.monotonic() < end:
        time.sleep(0.2)
    left = members({proc.pid})
    for p in left:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    text = log_path.read_text(errors="replace")
    return {"run": name, "moment": spec, "at_s": round(at, 1), "rows": seen, "exit": code,
            "want": 128 + sig, "plot": whole_png(run_dir / "accuracy.png"),
            "resume": text.count(RESUME_LINE) == 1, "stop_s": round(took, 1),
            "early": NOTHING_LINE in text and not run_dir.exists(),
            "lines": len(text.splitlines()), "left": len(left)}


def main() -> None:
    argv = sys.argv[1:]
    run_args = argv[argv.index("--") + 1:] if "--" in argv else DEFAULT_RUN
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--load", type=int, default=0, help="busy-loop processes beside the runs")
    p.add_argument("--parallel", type=int, default=1, help="runs at once")
    p.add_argument("--group", action="store_true", help="signal the process group (Ctrl-C)")
    p.add_argument("--out", type=Path, default=None, help="folder for the runs (a temp one)")
    p.add_argument("moments", nargs="+")
    args = p.parse_args(argv)
    args.run = run_args
    out = args.out or Path(tempfile.mkdtemp(prefix="flayer-stops-"))
    out.mkdir(parents=True, exist_ok=True)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(args.load)]
    results: list[dict] = []
    lock = threading.Lock()
    todo = list(enumerate(args.moments))

    def work() -> None:
        while True:
            with lock:
                if not todo:
                    return
                i, spec = todo.pop(0)
            r = trial(f"stop{i:02d}", spec, args, out)
            with lock:
                results.append(r)
                print(" ".join(f"{k}={v}" for k, v in r.items()), flush=True)

    started = time.monotonic()
    try:
        threads = [threading.Thread(target=work) for _ in range(args.parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for b in burners:
            b.kill()
            b.wait()
    results.sort(key=lambda r: r["run"])
    print("\n| run | moment | signal at (s) | rows then | exit | plot ok | resume line | "
          "stop (s) | lines | left |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {r['moment']} | {r['at_s']} | {r['rows']} | {r['exit']} | "
              f"{'yes' if r['plot'] else 'no'} | "
              f"{'yes' if r['resume'] else 'before its folder' if r['early'] else 'no'} | "
              f"{r['stop_s']} | {r['lines']} | {r['left']} |")
    ok = [r for r in results if r["exit"] == r["want"] and not r["left"]]
    run = [r for r in ok if r["plot"] and r["resume"]]
    early = [r for r in ok if r["early"]]
    print(f"\n{len(run) + len(early)}/{len(results)} clean stops in "
          f"{time.monotonic() - started:.0f} s: {len(run)} with the run's folder written (exit "
          f"130/143, a whole plot, one resume line, no process left), {len(early)} before it "
          f"(exit 130/143, 'nothing was written', no folder); runs in {out}")


if __name__ == "__main__":
    main()
