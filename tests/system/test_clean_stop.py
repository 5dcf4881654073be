"""Clean stops, fast: a real SIGINT or SIGTERM to a run in this process (the simulation's
layout without Ray) ends it with Stopped and its exit code, the line saying how to continue,
a whole plot and the finished rounds' rows; the signal rules of flayer.run.stops (held blocks,
nesting under a library that replaces a handler, a second signal, a stop before any run)."""

from __future__ import annotations

import csv
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from flayer.apps import inprocess
from flayer.config.compose import compose_dict
from flayer.run.experiment import run
from flayer.run.stops import Stopped, held_signals, stop_message, stop_on_signals, stopping
from flayer.state.checkpoint import Checkpoints
from tests.helpers import ROOT, small_data_tuning

PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"


@pytest.fixture
def overrides(fake_fmnist, cache_dir):
    return [f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}", "num_clients=2",
            "batch_size=4", "lr=0.01", "progress=false", "num_rounds=2",
            *small_data_tuning(())]


def signal_after(round_: int, sig: int):
    """The in-process engine, with `sig` sent to this process once that round's row is
    written (as `kill` from a shell would: the handler runs in the main thread)."""
    def engine(cfg, on_round, store, checkpointing):
        def finished(rec):
            on_round(rec)
            if rec.round == round_:
                os.kill(os.getpid(), sig)
        inprocess.engine(cfg, finished, store, checkpointing)
    return engine


def test_a_signal_stops_a_run_with_its_results_and_the_way_on(tmp_path, overrides, caplog):
    caplog.set_level(logging.INFO, logger="flayer")  # as run.py sets it
    run_dir = tmp_path / "run"
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(Stopped) as caught:
        run(compose_dict(overrides), run_dir, overrides, engine=signal_after(1, signal.SIGINT))
    stop = caught.value
    assert stop.exit_code == 130
    message = stop_message(stop, run_dir)
    head, command = message.split("; continue with: ")
    assert head == f"stopped (SIGINT); partial results in {run_dir}"
    python, script, resume = shlex.split(command)  # a command that works as printed:
    assert os.path.samefile(python, sys.executable)  # this interpreter, not `python`
    assert os.path.samefile(script, ROOT / "run.py") and resume == f"resume={run_dir}"
    log = (run_dir / "run.log").read_text()
    assert "starting flayer · fmnist" in log and " · 2 clients · 2 rounds · seed 0 in " in log
    assert f"stopped (SIGINT) after round 1 of 2; partial results here; continue it with " \
           f"resume={run_dir}" in log
    png = (run_dir / "accuracy.png").read_bytes()
    assert png.startswith(PNG_START) and png[-8:-4] == PNG_END
    with open(run_dir / "metrics.csv", newline="") as f:
        assert [r["round"] for r in csv.DictReader(f)] == ["0", "1"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] is False and summary["rounds_completed"] == 1
    assert Checkpoints.load(Checkpoints(run_dir).latest()).round == 0  # round 1's never came
    assert not list(run_dir.glob(".tmp-*"))  # no half-written file
    assert {s: signal.getsignal(s) for s in before} == before
    assert stopping() is None  # the next run in this process starts afresh
    # and the line's advice works: the run goes on to its end from there
    resume = [f"resume={run_dir}", "progress=false"]
    run(compose_dict(resume), run_dir, resume, engine=inprocess.engine)
    assert json.loads((run_dir / "summary.json").read_text())["complete"] is True
    log = (run_dir / "run.log").read_text()  # the same log goes on
    assert log.index("stopped (SIGINT)") < log.index(f"continuing {run_dir} after round 0") \
        < log.index(f"results in {run_dir}: best accuracy ")


def test_a_stop_swallowed_where_it_landed_still_stops_the_run(tmp_path, overrides):
    """Code that ignores what it raises (as Cython's module patching does at an import) must
    not let the run go on to its end: the next exchange raises the stop again."""
    def engine(cfg, on_round, store, checkpointing):
        def finished(rec):
            on_round(rec)
            if rec.round == 0:
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.05)  # Stopped is raised here, in the handler
                except BaseException:  # noqa: BLE001 - swallowed, like "Exception ignored"
                    pass
        inprocess.engine(cfg, finished, store, checkpointing)

    run_dir = tmp_path / "run"
    with pytest.raises(Stopped) as caught:
        run(compose_dict(overrides), run_dir, overrides, engine=engine)
    assert caught.value.exit_code == 143
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] is False and summary["rounds_completed"] == 0


def test_a_signal_in_a_held_block_stops_when_the_block_ends():
    seen = []
    with pytest.raises(Stopped) as caught, stop_on_signals():
        with held_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler has run: the block goes on
            seen.append(stopping())
        seen.append("after")  # never: Stopped comes as the block ends
    assert seen == [signal.SIGTERM] and caught.value.exit_code == 143


def test_nested_handlers_stay_on_top_of_a_library_that_replaced_them():
    def library_handler(signum, frame):  # as ray.init installs one for SIGTERM
        raise AssertionError("the library's handler ran")

    outer = signal.getsignal(signal.SIGTERM)
    with stop_on_signals():
        ours = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, library_handler)
        with stop_on_signals():
            assert signal.getsignal(signal.SIGTERM) is ours
        assert signal.getsignal(signal.SIGTERM) is ours  # kept once the inner one ends
        with pytest.raises(Stopped):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is outer


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_a_second_signal_while_stopping_ends_the_process_at_once():
    out = run_python(
        "import os, signal, time\n"
        "from flayer.run.stops import held_signals, stop_on_signals\n"
        "with stop_on_signals(), held_signals():  # stopping: its results being written\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.2)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "print('not ended')\n")
    assert out.returncode == 143 and "not ended" not in out.stdout


def test_a_stop_before_any_run_is_one_line():
    started = time.monotonic()
    out = run_python(
        "import os, signal, time\n"
        "from flayer.run.stops import exit_on_signals\n"
        "exit_on_signals()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(30)\n")
    assert out.returncode == 130 and time.monotonic() - started < 30
    assert out.stderr == "stopped (SIGINT) before the run started; nothing was written\n"


def test_the_plot_is_replaced_whole(tmp_path):
    from flayer.results.plots import plot_run

    out = tmp_path / "accuracy.png"
    out.write_bytes(b"an older plot")
    rows = [{"round": 0, "accuracy": 0.5, "accuracy_mean": 0.5, "accuracy_std": 0.1,
             "train_loss": ""}]
    plot_run(rows, out, "t")
    data = out.read_bytes()
    assert data.startswith(PNG_START) and data[-8:-4] == PNG_END
    assert [p.name for p in tmp_path.iterdir()] == ["accuracy.png"]



def test_a_failure_of_the_machinery_keeps_the_results_and_files_its_traceback(tmp_path,
                                                                            overrides):
    """Not a stop: Ray or Flower (here: the engine) failing after round 0. The rows written
    stay, and run.log holds the traceback that run.py names in its one line."""
    def breaks_after_round_0(cfg, on_round, store, checkpointing):
        def finished(rec):
            on_round(rec)
            raise RuntimeError("the executors went away")
        inprocess.engine(cfg, finished, store, checkpointing)

    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="went away"):
        run(compose_dict(overrides), run_dir, overrides, engine=breaks_after_round_0)
    with open(run_dir / "metrics.csv", newline="") as f:
        assert [r["round"] for r in csv.DictReader(f)] == ["0"]
    log = (run_dir / "run.log").read_text()
    assert "the run failed" in log and "Traceback" in log and "went away" in log
    assert json.loads((run_dir / "summary.json").read_text())["complete"] is False
