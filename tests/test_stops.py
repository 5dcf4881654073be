"""A real simulated run stopped from outside: SIGINT and SIGTERM end it within seconds with
its partial results, a checkpoint it continues from and no Ray process left; a run killed
with SIGKILL continues from its last checkpoint to the numbers of a run that never stopped; a
sweep continued with resume=auto skips finished jobs and runs the rest. Slow: real Ray."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flayer.deploy.processes import ProcessSet
from flayer.state.checkpoint import Checkpoints
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
