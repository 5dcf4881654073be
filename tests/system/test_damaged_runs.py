"""A damaged run folder is never continued silently: `resume=` verifies the checkpoint (its
manifest: every file's size and digest), the saved config and overrides and the rows it keeps
before any round runs, and refuses a damaged one by the name of its file, leaving the folder
as it was; with `checkpoint_keep` > 1 it continues from the newest whole checkpoint instead,
saying so. A client state file that cannot be read during a run stops the run (exit 2): it is
the run's storage, not a client's failure."""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
from pathlib import Path

import pytest

from flayer.apps import inprocess
from flayer.config.compose import compose_dict
from flayer.run.experiment import run
from flayer.state.checkpoint import CLIENTS, LATEST, MANIFEST, SERVER, Checkpoints
from flayer.util.errors import ConfigError, DamagedFile, RunError
from tests.helpers import small_data_tuning, write_fake_fmnist
from tests.system.test_resume import same_results
from tests.unit.test_damaged_files import cut, garbage, text


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("damaged-runs")
    data = write_fake_fmnist(root / "fmnist", n_train=200, n_test=60)
    args = [f"dataset.path={data}", f"cache_dir={root / 'cache'}", "num_clients=3",
            "batch_size=4", "lr=0.01", "progress=false", "checkpoint_keep=2"]
    return args + small_data_tuning(args)


@pytest.fixture(scope="module")
def finished(base, tmp_path_factory) -> Path:
    """A complete run of 2 rounds (checkpoints of rounds 1 and 2)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    args = [*base, "num_rounds=2"]
    run(compose_dict(args), run_dir, args, engine=inprocess.engine)
    return run_dir


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    return run_dir


def resume(run_dir: Path, *extra: str) -> dict:
    args = [f"resume={run_dir}", "num_rounds=3", *extra]
    return run(compose_dict(args), run_dir, args, engine=inprocess.engine)


def snapshot(run_dir: Path) -> dict[str, str]:
    return {str(f.relative_to(run_dir)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(run_dir.rglob("*")) if f.is_file()}


def newest(run_dir: Path) -> Path:
    return sorted((run_dir / "checkpoints").glob("round-*"))[-1]


def refused(run_dir: Path, file: Path, *extra: str) -> str:
    """Resuming is refused naming `file`, before anything in the folder changes."""
    before = snapshot(run_dir)
    with pytest.raises(DamagedFile) as caught:
        resume(run_dir, *extra)
    message = str(caught.value)
    assert str(file) in message or file.name in message, message
    assert "\n" not in message, message
    assert snapshot(run_dir) == before
    return message


def only_newest(run_dir: Path) -> Path:
    """The run folder as checkpoint_keep=1 leaves it: the newest checkpoint alone."""
    for folder in sorted((run_dir / "checkpoints").glob("round-*"))[:-1]:
        shutil.rmtree(folder)
    return newest(run_dir)


def every_checkpoint(run_dir: Path, damage) -> None:
    for folder in (run_dir / "checkpoints").glob("round-*"):
        damage(folder)


def test_each_checkpoint_lists_its_files(finished):
    folder = newest(finished)
    assert (folder / MANIFEST).is_file()
    assert Checkpoints(finished).verify(folder) is None


@pytest.mark.parametrize("damage", [cut, garbage, text])
def test_a_damaged_server_state_is_refused_by_name(copy, damage):
    damage(only_newest(copy) / SERVER)
    refused(copy, newest(copy) / SERVER)


@pytest.mark.parametrize("damage", [cut, garbage, text])
def test_a_damaged_client_file_in_the_checkpoint_is_refused_by_name(copy, damage):
    file = only_newest(copy) / CLIENTS / "client-000001.npz"
    damage(file)
    message = refused(copy, file)
    assert "manifest" in message


def test_a_missing_or_an_extra_client_file_is_refused(copy):
    file = only_newest(copy) / CLIENTS / "client-000002.npz"
    saved = file.read_bytes()
    file.unlink()
    refused(copy, file)
    file.write_bytes(saved)
    shutil.copy(file, newest(copy) / CLIENTS / "client-000009.npz")
    refused(copy, newest(copy) / CLIENTS / "client-000009.npz")


@pytest.mark.parametrize("name", [LATEST, f"round-000002/{MANIFEST}"])
def test_a_damaged_pointer_or_manifest_is_refused(copy, name):
    only_newest(copy)
    garbage(copy / "checkpoints" / name)
    refused(copy, copy / "checkpoints" / name)


def test_when_every_checkpoint_is_damaged_the_run_is_refused(copy):
    every_checkpoint(copy, lambda folder: cut(folder / SERVER))
    assert "older checkpoint damaged as well" in refused(copy, newest(copy) / SERVER)


@pytest.mark.parametrize("name", ["config.yaml", "overrides.yaml"])
@pytest.mark.parametrize("damage", [garbage, text])
def test_a_damaged_saved_config_is_refused_by_name(copy, name, damage):
    damage(copy / name)
    refused(copy, copy / name)


def test_a_saved_config_cut_short_is_refused_or_completed_from_the_overrides(copy, caplog):
    """The run's settings are composed again from overrides.yaml: a config.yaml cut at a line
    end lacks settings (taken from the overrides, saying so), one cut inside a value
    disagrees with them (refused, naming it)."""
    text = (copy / "config.yaml").read_text()
    (copy / "config.yaml").write_text(text[: text.index("\nbackend:")])
    with caplog.at_level(logging.WARNING, logger="flayer"):
        assert resume(copy)["complete"]
    assert "config.yaml lacks the settings backend" in caplog.text
    cut_in_value = text[: text.index("name: dirichlet") + len("name: dirich")]
    (copy / "config.yaml").write_text(cut_in_value)
    with pytest.raises(ConfigError, match="config.yaml and overrides.yaml disagree"):
        resume(copy, "num_rounds=4")


@pytest.mark.parametrize("damage", [cut, garbage])
def test_rows_the_checkpoint_needs_must_be_there(copy, damage):
    damage(copy / "metrics.csv")
    refused(copy, copy / "metrics.csv")


def test_with_older_checkpoints_a_damaged_newest_gives_way(copy, base, tmp_path, caplog):
    cut(newest(copy) / CLIENTS / "client-000000.npz")
    with caplog.at_level(logging.WARNING, logger="flayer"):
        summary = resume(copy)
    assert summary["complete"] and summary["rounds_completed"] == 3
    assert "continuing from the older whole checkpoint round-000001" in caplog.text
    straight = tmp_path / "straight"
    args = [*base, "num_rounds=3"]
    run(compose_dict(args), straight, args, engine=inprocess.engine)
    same_results(copy, straight)  # rounds 2 and 3 redone: the numbers of a run never stopped


class DamagingGrid(inprocess.InProcessGrid):
    """Cuts client 1's stored state in place (its checkpoint shares the file) as round 2's
    training messages go out."""

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if any(m.content["config"]["server-round"] == 2 for m in messages):
            cut(self.store.file(1))
        return super().send_and_receive(messages, timeout=timeout)


def test_a_client_file_damaged_during_a_run_stops_it(base, tmp_path):
    """Client 1's state, damaged during round 2, stops the run with its name; the folder
    keeps rounds 0-1 and refuses a silent resume (the checkpoint's copy is damaged too)."""
    run_dir = tmp_path / "run"
    args = [*base, "num_rounds=3", "checkpoint_keep=1"]

    def engine(cfg, on_round, store, checkpointing):
        grid = DamagingGrid(cfg, store=store)
        inprocess.run_in_process(cfg, on_round, grid=grid, checkpointing=checkpointing)

    with pytest.raises(RunError) as caught:
        run(compose_dict(args), run_dir, args, engine=engine)
    assert "client-000001.npz" in str(caught.value)
    assert "resume" in str(caught.value)
    assert (run_dir / "accuracy.png").stat().st_size > 0
    assert [r["round"] for r in _rows(run_dir)] == ["0", "1"]
    refused(run_dir, newest(run_dir) / CLIENTS / "client-000001.npz")


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


class Replies:
    """A grid that answers with given replies (the strategy's exchange sees only these)."""

    def __init__(self, replies) -> None:
        self.replies = replies

    def send_and_receive(self, messages, *, timeout=None):
        return self.replies


def test_a_reply_that_says_the_run_cannot_go_on_stops_it_with_its_words():
    from flwr.app import ConfigRecord, MetricRecord, RecordDict

    from flayer.protocol import keys
    from flayer.protocol.replies import exchange
    from tests.helpers import mock_reply

    fine = mock_reply(1, RecordDict({keys.client_record(0): MetricRecord({"x": 1})}))
    failed = mock_reply(2, error="node unavailable")
    assert exchange(Replies([fine, failed]), [], 1.0) == [fine, failed]  # failures: counted
    broken = mock_reply(3, RecordDict({keys.RUN_ERROR: ConfigRecord(
        {keys.REASON: "/x/state/client-000004.npz: cannot be read"})}))
    with pytest.raises(RunError, match="client-000004.npz: cannot be read"):
        exchange(Replies([fine, broken, failed]), [], 1.0)
