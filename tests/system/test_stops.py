"""A real simulated run stopped from outside: SIGINT and SIGTERM end it within seconds with
its partial results, a checkpoint it continues from and no Ray process left; a run killed
with SIGKILL continues from its last checkpoint to the numbers of a run that never stopped; a
sweep continued with resume=auto skips finished jobs and runs the rest. Slow: real Ray."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flayer.deploy.processes import ProcessSet, members
from flayer.state.checkpoint import Checkpoints
from flayer.util.commands import run_command
from tests.helpers import ROOT, write_fake_fmnist

pytestmark = pytest.mark.slow


@pytest.fixture
def base(tmp_path):
    data = write_fake_fmnist(tmp_path / "fmnist", n_train=400, n_test=100)
    return [f"dataset.path={data}", f"cache_dir={tmp_path / 'cache'}", "num_clients=4",
            "batch_size=4", "lr=0.01", "strategy.c=4", "partition.alpha=1.0", "progress=false"]


def run_py(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out


def wait_until(check, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        out = list(csv.DictReader(f))
    for r in out:
        r.pop("round_seconds")
    return out


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_cleanly_and_it_can_continue(tmp_path, base, sig, code):
    run_dir = tmp_path / "run"
    with ProcessSet(tmp_path / "logs") as procs:
        proc = procs.start("run", [sys.executable, str(ROOT / "run.py"), *base,
                                   "num_rounds=50", f"hydra.run.dir={run_dir}"], cwd=ROOT)
        wait_until(lambda: Checkpoints(run_dir).latest() is not None, "a checkpoint")
        ray_seen = procs.members() - {proc.pid}
        assert ray_seen, "the run's Ray processes"
        sent = time.monotonic()
        proc.popen.send_signal(sig)
        assert proc.popen.wait(timeout=60) == code
        assert time.monotonic() - sent < 30
        wait_until(lambda: not procs.leftovers(), "the run's Ray processes to end", 30)
        log = proc.log_text()
    assert f"resume={run_dir}" in log
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] is False
    done = Checkpoints.load(Checkpoints(run_dir).latest()).round
    assert done < 50 and len(rows(run_dir)) >= done + 1
    run_py(f"resume={run_dir}", f"num_rounds={done + 1}")  # continues from that checkpoint
    assert [int(r["round"]) for r in rows(run_dir)] == list(range(done + 2))
    assert json.loads((run_dir / "summary.json").read_text())["complete"] is True


def test_a_run_killed_in_round_3_continues_to_the_uninterrupted_numbers(tmp_path, base):
    run_py(*base, "num_rounds=5", f"hydra.run.dir={tmp_path / 'straight'}")
    run_dir, pause = tmp_path / "killed", tmp_path / "pause"
    pause.write_text("3\n")  # the server holds before round 3, however fast it runs
    with ProcessSet(tmp_path / "logs") as procs:
        proc = procs.start("run", [sys.executable, str(ROOT / "run.py"), *base,
                                   "num_rounds=5", f"backend.pause_file={pause}",
                                   f"hydra.run.dir={run_dir}"], cwd=ROOT)
        wait_until(lambda: "holding before round 3" in proc.log_text(), "the hold")
        pause.unlink()  # round 3 starts ...
        wait_until(lambda: "round,model_version" in (run_dir / "metrics.csv").read_text()
                   and len(rows(run_dir)) == 3, "rounds 0-2")
        procs.stop(proc, kill=True)  # ... and the run is killed: no summary, no goodbye
    assert not (run_dir / "summary.json").exists()
    assert Checkpoints.load(Checkpoints(run_dir).latest()).round == 2
    run_py(f"resume={run_dir}")  # the pause file is gone: no hold
    assert rows(run_dir) == rows(tmp_path / "straight")


def test_a_sweep_continued_with_auto_skips_finished_jobs(tmp_path, base):
    sweep = tmp_path / "sweep"
    base = [o for o in base if not o.startswith("strategy.c=")]  # FLAYER's setting
    run_py("-m", *base, "strategy=fedavg,fedper", "num_rounds=1", f"hydra.sweep.dir={sweep}")
    done = sweep / "0-fedavg" / "metrics.csv"
    before = done.read_text()
    for f in (sweep / "1-fedper").iterdir():  # the second job as if it never ran
        if f.is_file():
            f.unlink()
    out = run_py("-m", *base, "strategy=fedavg,fedper", "num_rounds=1",
                 f"hydra.sweep.dir={sweep}", "resume=auto")
    assert "is complete" in out.stdout and done.read_text() == before
    assert json.loads((sweep / "1-fedper" / "summary.json").read_text())["complete"]


# ---- stops under load, at every kind of moment ----------------------------------------------
# (moment, what): "config+0" as soon as the run folder is written (Ray starting), "ray+S" S
# seconds after the run's executor actor is up (round 0 under way), "rowK+S" S seconds after
# round K's row is written ("rowK+0": at once, while round K's checkpoint is written); what
# comes then is a signal, or the executor's actor killed (as the kernel's OOM killer would).
# An executor that never answers is tests/unit/test_sim_grid.py's (it takes backend.round_timeout).
MOMENTS = [("config+0", signal.SIGTERM), ("ray+0", signal.SIGINT), ("ray+2", signal.SIGTERM),
           ("row0+0", signal.SIGINT), ("row0+1", signal.SIGTERM), ("row1+0", signal.SIGTERM),
           ("row1+0.5", "kill"), ("row1+2", signal.SIGINT), ("row2+0", signal.SIGINT),
           ("row2+1", signal.SIGTERM)]
AT_ONCE = 5  # runs at a time (about 2 GB each, with one executor actor)
ACTOR = b"ray::ClientAppActor"


def reached(moment: str, run_dir: Path, pid: int) -> bool:
    kind = moment.partition("+")[0]
    if kind == "config":
        return (run_dir / "config.yaml").is_file()
    if kind == "ray":
        return bool(actors(pid))
    return (run_dir / "metrics.csv").is_file() and len(rows(run_dir)) > int(kind[3:])


def actors(pid: int) -> list[int]:
    found = []
    for p in members({pid}):
        try:
            if Path(f"/proc/{p}/cmdline").read_bytes().startswith(ACTOR):
                found.append(p)
        except OSError:
            pass
    return found


def act(what: int | str, pid: int) -> None:
    if isinstance(what, int):
        os.kill(pid, what)
    else:
        for actor in actors(pid):
            os.kill(actor, signal.SIGKILL)


def at_moments(tmp_path: Path, args: list[str], batch: list[tuple[int, str, int | str]],
               procs: ProcessSet) -> list[tuple[str, int | str, int, Path, str]]:
    """Start a run per moment, act on each when its moment comes, wait for them to end."""
    runs = []
    for i, moment, what in batch:
        run_dir = tmp_path / f"run{i}"
        proc = procs.start(f"run{i}", [sys.executable, str(ROOT / "run.py"), *args,
                                       f"hydra.run.dir={run_dir}"], cwd=ROOT)
        runs.append((moment, what, run_dir, proc))
    due: dict[int, float] = {}
    done: set[int] = set()
    deadline = time.monotonic() + 300
    while len(done) < len(runs) and time.monotonic() < deadline:
        for n, (moment, what, run_dir, proc) in enumerate(runs):
            if n not in due and reached(moment, run_dir, proc.pid):
                due[n] = time.monotonic() + float(moment.partition("+")[2])
            if n in due and n not in done and due[n] <= time.monotonic():
                if proc.running():
                    act(what, proc.pid)
                done.add(n)
        time.sleep(0.05)
    return [(moment, what, proc.popen.wait(timeout=90), run_dir, proc.log_text())
            for moment, what, run_dir, proc in runs]


def test_stops_at_any_moment_under_load_end_cleanly(tmp_path):
    """Each signal: exit 130/143, one line with the way on, a whole plot. Each executor
    lost: exit 1, a line naming the round and its clients, then the way on. Never Ray's
    tracebacks, a hang or a process left."""
    data = write_fake_fmnist(tmp_path / "fmnist", n_train=200, n_test=60)
    args = [f"dataset.path={data}", f"cache_dir={tmp_path / 'cache'}", "num_clients=2",
            "batch_size=8", "lr=0.01", "strategy.c=4", "partition.alpha=1.0",
            "progress=false", "num_rounds=30", "backend.num_cpus=1"]
    burners = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 400"
                                 "\nwhile time.time() < end: pass"])
               for _ in range(os.cpu_count() or 1)]  # a busy core each, bounded in time
    results = []
    try:
        for first in range(0, len(MOMENTS), AT_ONCE):
            batch = [(i, m, w) for i, (m, w) in enumerate(MOMENTS)][first:first + AT_ONCE]
            with ProcessSet(tmp_path / "logs") as procs:
                results += at_moments(tmp_path, args, batch, procs)
                wait_until(lambda: not procs.leftovers(), "the runs' Ray processes to end", 30)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    for moment, what, code, run_dir, log in results:
        lines = log.splitlines()
        assert lines[0] == f"run folder: {run_dir}", log[-1500:]  # said when the run starts
        lines = lines[1:]
        shown = f"{moment} {what}: exit {code}\n{log[-1500:]}"
        png = (run_dir / "accuracy.png").read_bytes()
        assert png.startswith(b"\x89PNG") and png[-8:-4] == b"IEND", shown
        assert not json.loads((run_dir / "summary.json").read_text())["complete"], shown
        if isinstance(what, int):
            assert code == 128 + what, shown
            assert lines[-1] == (f"stopped ({signal.Signals(what).name}); partial results "
                                 f"in {run_dir}; continue with: "
                                 f"{run_command(f'resume={run_dir}', cwd=ROOT)}"), shown
            assert len(lines) <= 1 and "Traceback" not in log, shown
        else:  # what happened, said once: Ray's line for its dead worker, ours, the way on
            assert code == 1 and len(lines) <= 3 and "Traceback" not in log, shown
            assert "clients 0, 1: the executor serving them failed (ActorDiedError" in log, shown
            assert lines[-1].endswith(f"continue it with resume={run_dir}"), shown
