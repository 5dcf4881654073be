"""Bad input stops run.py before any simulation, with one clear message and exit code 2."""

import subprocess
import sys

import pytest

from flayer.config.validation import validate
from flayer.util.errors import ConfigError
from tests.helpers import ROOT, make_config


def run_py(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def base(fake_fmnist, cache_dir, tmp_path):
    return [f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}", "num_clients=4",
            f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]


@pytest.mark.parametrize(
    ("override", "setting"),
    [
        ("partition.alpha=0", "partition.alpha"),
        ("partition.alpha=-1", "partition.alpha"),
        ("num_rounds=-1", "num_rounds"),
        ("join_ratio=1.5", "join_ratio"),
        ("num_clients=10000", "num_clients"),
        ("partition.min_partition_size=500", "partition.min_partition_size"),
        ("lr=0", "lr"),
        ("strategy.accuracy_source=train", "strategy.accuracy_source"),
        ("strategy.P=9", "strategy.P"),
        ("device=tpu", "device"),
        ("backend.executors=0", "backend.executors"),
        ("backend.state_dir=' '", "backend.state_dir"),
        ("checkpoint_every=0", "checkpoint_every"),
        ("checkpoint_keep=0", "checkpoint_keep"),
    ],
)
def test_bad_setting_is_named_with_its_value(fake_fmnist, cache_dir, override, setting):
    cfg = make_config(f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}", "num_clients=4",
                      override)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    value = override.split("=", 1)[1].strip("'").strip()
    assert f"bad setting {setting}=" in str(err.value) and value in str(err.value)


def test_bad_setting_exits_2_before_any_simulation(base, tmp_path):
    out = run_py(*base, "partition.alpha=-1")
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr == "error: bad setting partition.alpha=-1.0: must be > 0\n"
    assert not (tmp_path / "run").exists()  # no run folder, no run.log


def test_a_split_that_cannot_be_made_exits_2(base):
    out = run_py(*base, "num_clients=300", "partition.alpha=0.01",
                 "partition.min_partition_size=2")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "could not give each of 300 clients" in out.stderr


def test_missing_data_directory(base, tmp_path):
    out = run_py(*base, f"dataset.path={tmp_path / 'nowhere'}")
    assert out.returncode == 2
    assert "dataset.path" in out.stderr and "dataset-fashion-mnist" in out.stderr
    assert not (tmp_path / "run").exists()  # refused with the data: still nothing left


@pytest.mark.parametrize(("override", "line"), [
    ("no_such_key=1", "error: unknown setting 'no_such_key' (run-wide settings and groups: "),
    ("strategy=nope", "error: unknown strategy 'nope' (choose one of: apfl, ditto, "),
    ("num_rounds=abc", "error: bad setting num_rounds='abc': Value 'abc' of type 'str' could "
                       "not be converted to Integer"),
])
def test_hydra_composition_errors(base, tmp_path, override, line):
    out = run_py(*base, override)
    assert out.returncode == 2
    assert out.stderr.startswith(line) and out.stderr.count("\n") == 1, out.stderr
    assert not (tmp_path / "run").exists()


def test_wrong_type_is_a_composition_error(fake_fmnist):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="num_rounds"):
        make_config("num_rounds=abc")


def test_multirun_checks_every_job_before_the_first(base, tmp_path):
    out = run_py("-m", *base, "num_rounds=0", "partition.alpha=0.5,-2")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "partition.alpha" in out.stderr and "no job was started" in out.stderr
    sweep = tmp_path / "sweep"
    assert not sweep.exists() or not any(sweep.rglob("metrics.csv"))


def test_a_run_directory_with_results_is_refused_and_kept(base, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("round\n0\n")
    (run_dir / "config.yaml").write_text("old: config\n")
    out = run_py(*base)
    assert out.returncode == 2
    assert "already holds results" in out.stderr
    assert (run_dir / "metrics.csv").read_text() == "round\n0\n"
    assert (run_dir / "config.yaml").read_text() == "old: config\n"
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "metrics.csv"]


def test_resuming_a_folder_that_is_not_a_run_exits_2(base, tmp_path):
    out = run_py(*base, f"resume={tmp_path / 'nowhere'}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "bad setting resume=" in out.stderr
    assert f"{tmp_path / 'nowhere'} does not exist" in out.stderr
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "run").exists()
