"""Checkpoints and resume, in-process (the simulation's layout without Ray): a run stopped and
continued writes exactly the files of a run that never stopped, for every method; a
checkpoint cut while being written leaves the previous one; a continuation may change only
num_rounds."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from flayer.apps import inprocess
from flayer.config.compose import compose_dict
from flayer.protocol.catalog import METHODS
from flayer.run.experiment import run
from flayer.run.stops import Stopped
from flayer.state.checkpoint import LATEST, Checkpoints
from flayer.util.errors import ConfigError
from tests.helpers import small_data_tuning


@pytest.fixture
def overrides(fake_fmnist, cache_dir):
    def make(*extra: str) -> list[str]:
        return [f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}", "num_clients=4",
                "batch_size=4", "lr=0.01", "progress=false", "join_ratio=0.5",
                *small_data_tuning(extra), *extra]
    return make


def start(run_dir: Path, overrides: list[str], stop_after: int | None = None):
    """A run in this process; with stop_after, the stop comes right after that round's rows
    (before its checkpoint), as a signal would."""
    def engine(cfg, on_round, store, checkpointing):
        def finished(rec):
            on_round(rec)
            if rec.round == stop_after:
                raise Stopped(2)
        inprocess.engine(cfg, finished, store, checkpointing)

    return run(compose_dict(overrides), run_dir, overrides, engine=engine)


def table(run_dir: Path, name: str) -> list[dict[str, str]]:
    with open(run_dir / name, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.pop("round_seconds", None)
    return rows


def same_results(a: Path, b: Path) -> None:
    assert table(a, "metrics.csv") == table(b, "metrics.csv")
    assert table(a, "clients.csv") == table(b, "clients.csv")
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    sa.pop("wall_seconds"), sb.pop("wall_seconds")
    assert sa == sb


@pytest.mark.parametrize("method", METHODS.names())
def test_stopped_and_resumed_equals_uninterrupted(tmp_path, overrides, method):
    args = overrides(f"strategy={method}", "num_rounds=3")
    start(tmp_path / "straight", args)
    with pytest.raises(Stopped):
        start(tmp_path / "stopped", args, stop_after=2)
    assert len(table(tmp_path / "stopped", "metrics.csv")) == 3  # rounds 0-2 written
    # round 2's checkpoint was never written: the run continues after round 1, redoing 2
    assert Checkpoints(tmp_path / "stopped").latest().name == "round-000001"
    resume = [f"resume={tmp_path / 'stopped'}", "progress=false"]
    run(compose_dict(resume), tmp_path / "stopped", resume, engine=inprocess.engine)
    same_results(tmp_path / "straight", tmp_path / "stopped")


def test_a_run_with_new_clients_resumed_equals_uninterrupted(tmp_path, overrides):
    args = overrides("new_clients=1", "num_rounds=3", "eval_every=2")
    start(tmp_path / "straight", args)
    with pytest.raises(Stopped):
        start(tmp_path / "stopped", args, stop_after=2)
    resume = [f"resume={tmp_path / 'stopped'}"]
    run(compose_dict(resume), tmp_path / "stopped", resume, engine=inprocess.engine)
    same_results(tmp_path / "straight", tmp_path / "stopped")
    rows = table(tmp_path / "stopped", "metrics.csv")
    assert [r["new_accuracy"] != "" for r in rows] == [True, False, True, True]
    summary = json.loads((tmp_path / "stopped" / "summary.json").read_text())
    assert summary["new_clients"] == 1 and summary["final_new_accuracy"] is not None


def test_a_finished_run_extended_equals_a_longer_one(tmp_path, overrides):
    start(tmp_path / "long", overrides("num_rounds=4"))
    start(tmp_path / "short", overrides("num_rounds=2"))
    more = [f"resume={tmp_path / 'short'}", "num_rounds=4"]
    run(compose_dict(more), tmp_path / "short", more, engine=inprocess.engine)
    same_results(tmp_path / "long", tmp_path / "short")
    # and a complete run asked again with the same num_rounds is left alone
    again = [f"resume={tmp_path / 'short'}"]
    before = (tmp_path / "short" / "metrics.csv").read_text()
    summary = run(compose_dict(again), tmp_path / "short", again, engine=inprocess.engine)
    assert summary["rounds_completed"] == 4
    assert (tmp_path / "short" / "metrics.csv").read_text() == before


def test_a_checkpoint_cut_while_being_written_leaves_the_previous_one(tmp_path, overrides):
    args = overrides("num_rounds=3", "checkpoint_keep=2")
    start(tmp_path / "straight", args)
    with pytest.raises(Stopped):
        start(tmp_path / "cut", args, stop_after=3)  # rounds 0-2 checkpointed, 3 not
    points = Checkpoints(tmp_path / "cut")
    assert points.latest().name == "round-000002"
    assert sorted(p.name for p in points.root.glob("round-*")) == ["round-000001",
                                                                  "round-000002"]
    # a crash while writing round 3's: its folder is there in part, LATEST still names 2
    partial = points.root / ".tmp-round-000003"
    shutil.copytree(points.latest(), partial)
    (partial / "server.npz").write_bytes(b"cut short")
    # ... and a crash between the rename and the switch: a round-3 folder LATEST never named
    shutil.copytree(points.latest(), points.root / "round-000003")
    assert (points.root / LATEST).read_text() == "round-000002"
    resume = [f"resume={tmp_path / 'cut'}"]
    run(compose_dict(resume), tmp_path / "cut", resume, engine=inprocess.engine)
    same_results(tmp_path / "straight", tmp_path / "cut")
    assert not partial.exists()


def test_a_run_stopped_in_round_0_starts_again(tmp_path, overrides):
    args = overrides("num_rounds=2")
    start(tmp_path / "straight", args)
    with pytest.raises(Stopped):
        start(tmp_path / "early", args, stop_after=0)
    assert Checkpoints(tmp_path / "early").latest() is None
    resume = [f"resume={tmp_path / 'early'}"]
    run(compose_dict(resume), tmp_path / "early", resume, engine=inprocess.engine)
    same_results(tmp_path / "straight", tmp_path / "early")


def test_other_settings_on_resume_are_refused_naming_the_keys(tmp_path, overrides):
    with pytest.raises(Stopped):
        start(tmp_path / "r", overrides("num_rounds=3"), stop_after=2)  # checkpoint: 1
    for extra, named in (("seed=3", "seed: 0 -> 3"), ("strategy=fedavg", "strategy=fedavg"),
                         ("partition.alpha=0.3", "partition.alpha"), ("lr=0.5", "lr")):
        args = [f"resume={tmp_path / 'r'}", extra]
        with pytest.raises(ConfigError, match=named) as err:
            run(compose_dict(args), tmp_path / "r", args, engine=inprocess.engine)
        assert err.value.setting == "resume"
    args = [f"resume={tmp_path / 'r'}", "num_rounds=0"]
    with pytest.raises(ConfigError, match="num_rounds"):
        run(compose_dict(args), tmp_path / "r", args, engine=inprocess.engine)


def test_a_missing_or_foreign_folder_is_refused(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("not a run")
    for folder in (tmp_path / "missing", tmp_path / "foreign"):
        args = [f"resume={folder}"]
        with pytest.raises(ConfigError, match="resume"):
            run(compose_dict(args), folder, args, engine=inprocess.engine)


def test_resume_auto_starts_a_fresh_folder(tmp_path, overrides):
    args = overrides("num_rounds=1", "resume=auto")
    summary = run(compose_dict(args), tmp_path / "job", args, engine=inprocess.engine)
    assert summary["complete"] and summary["rounds_completed"] == 1


def test_supernodes_continue_from_their_state_dir_by_the_run_folder(tmp_path, overrides):
    """The deployment's layout (a node per client, state in its memory and its state-dir):
    a continued run has new nodes with empty memory, which find their client's state of the
    checkpoint on disk, under the run folder's key, passing over what the unfinished round
    wrote."""
    def nodes(state_dir: Path, stop_after: int | None = None):
        def engine(cfg, on_round, store, checkpointing):
            def finished(rec):
                on_round(rec)
                if rec.round == stop_after:
                    raise Stopped(15)
            grid = inprocess.InProcessGrid(cfg, {"state-dir": str(state_dir)})
            inprocess.run_in_process(cfg, finished, grid, checkpointing=checkpointing)
        return engine

    args = overrides("strategy=flayer", "num_rounds=4")
    run(compose_dict(args), tmp_path / "straight", args, engine=nodes(tmp_path / "d1"))
    with pytest.raises(Stopped):
        run(compose_dict(args), tmp_path / "stopped", args,
            engine=nodes(tmp_path / "d2", stop_after=2))
    resume = [f"resume={tmp_path / 'stopped'}"]
    run(compose_dict(resume), tmp_path / "stopped", resume, engine=nodes(tmp_path / "d2"))
    same_results(tmp_path / "straight", tmp_path / "stopped")
