"""Real simulations through run.py (Flower + Ray), as a user runs them. Marked slow; the real
data's lookup is checked fast, since the learning test fails (never skips) without the data."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from flayer.data.sources.fmnist import FILES, FashionMNIST, read_idx
from tests.helpers import ROOT, real_fmnist, write_fake_fmnist, write_real_subset


def run_py(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "progress=false", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_real_data_is_found_where_the_source_looks_gzipped_or_not(tmp_path, monkeypatch):
    plain = write_fake_fmnist(tmp_path / "cache", n_train=30, n_test=20, gz=False)
    monkeypatch.setattr(FashionMNIST, "locations", (str(tmp_path / "none"), str(plain)))
    assert real_fmnist() == plain
    subset = write_real_subset(tmp_path / "subset", n_train=12, n_test=5)
    for key, n in (("train_x", 12), ("train_y", 12), ("test_x", 5), ("test_y", 5)):
        np.testing.assert_array_equal(read_idx(subset / (FILES[key] + ".gz")),
                                      read_idx(plain / FILES[key])[:n])


def test_missing_real_data_fails_and_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(FashionMNIST, "locations", (str(tmp_path / "none"),))
    assert real_fmnist() is None
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y dataset-fashion-mnist"):
        write_real_subset(tmp_path / "subset", n_train=10, n_test=10)


@pytest.mark.slow
def test_flayer_learns_on_real_fashion_mnist(tmp_path):
    # the only check of learning on real data: without the data it fails, it never skips
    data = write_real_subset(tmp_path / "fmnist", n_train=4000, n_test=1000)
    run_dir = tmp_path / "run"
    run_py(f"dataset.path={data}", f"cache_dir={tmp_path / 'cache'}", "num_clients=5",
           "num_rounds=3", f"hydra.run.dir={run_dir}")
    for name in ("config.yaml", "metrics.csv", "clients.csv", "summary.json", "accuracy.png"):
        assert (run_dir / name).is_file(), name
    assert f"results in {run_dir}" in (run_dir / "run.log").read_text()  # the run's own log
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] and summary["method"] == "flayer"
    assert summary["final_accuracy"] > 0.8  # chance is 0.1
    metrics = rows(run_dir)
    assert [r["round"] for r in metrics] == ["0", "1", "2", "3"]
    assert float(metrics[3]["train_loss"]) < float(metrics[1]["train_loss"])
    assert all(int(r["failures"]) == 0 for r in metrics)
    with open(run_dir / "clients.csv") as f:
        assert len(list(csv.DictReader(f))) == 4 * 5  # every client, every round
    # each client's state is in the run's store, one file each: FLAYER's top-P tensors
    assert len(list((run_dir / "state").glob("client-*.npz"))) == 5


@pytest.mark.slow
def test_flayer_with_every_component_off_equals_fedavg(tmp_path):
    data = write_fake_fmnist(tmp_path / "fake", n_train=500, n_test=100)
    common = [f"dataset.path={data}", f"cache_dir={tmp_path / 'cache'}", "num_clients=4",
              "num_rounds=2", "seed=3", "partition.alpha=0.5"]
    run_py(*common, "strategy=flayer", "strategy.local_init=false",
           "strategy.adaptive_lr=false", "strategy.masked_upload=false",
           f"hydra.run.dir={tmp_path / 'off'}", f"backend.state_dir={tmp_path / 'states'}",
           "backend.executors=3")
    store, = (tmp_path / "states").iterdir()  # the store named after its run folder
    assert store.name.startswith("off-") and len(list(store.glob("client-*.npz"))) == 4
    assert not (tmp_path / "off" / "state").exists()
    run_py(*common, "strategy=fedavg", f"hydra.run.dir={tmp_path / 'avg'}")
    off, avg = rows(tmp_path / "off"), rows(tmp_path / "avg")
    assert len(off) == len(avg) == 3
    for a, b in zip(off, avg, strict=True):
        for column in a:
            if column == "round_seconds":
                continue
            if a[column] == "" or b[column] == "":
                assert a[column] == b[column], column
            else:
                assert float(a[column]) == pytest.approx(float(b[column]), abs=1e-6), column
