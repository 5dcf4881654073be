"""A Ray cluster started outside flayer: a simulation attaches to it on purpose
(`backend.address`) and leaves it running, and a simulation without an address runs in a
private Ray instance while that cluster runs and RAY_ADDRESS names it. Slow: real Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from flayer.config.validation import validate
from flayer.deploy.local import free_port
from flayer.deploy.processes import ProcessSet
from flayer.util.errors import ConfigError
from tests.helpers import ROOT

RAY = str(Path(sys.executable).parent / "ray")


def run_py(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "progress=false", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def cluster_up(address: str) -> bool:
    status = subprocess.run([RAY, "status", "--address", address], capture_output=True,
                            text=True, timeout=60)
    return status.returncode == 0


@pytest.mark.parametrize("address", ["nowhere", "host:port", "127.0.0.1:0", ":6379"])
def test_a_bad_address_is_refused_before_any_work(small, address):
    with pytest.raises(ConfigError, match="backend.address"):
        validate(small(f"backend.address={address}"))


def test_an_address_takes_no_cpu_count(small):
    with pytest.raises(ConfigError, match="backend.num_cpus"):
        validate(small("backend.address=auto", "backend.num_cpus=2"))


@pytest.mark.slow
def test_attach_to_a_running_cluster_and_run_beside_it(tmp_path, fake_fmnist, cache_dir):
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    procs = ProcessSet(tmp_path / "logs")
    head = procs.start("ray-head", [RAY, "start", "--head", f"--port={port}", "--num-cpus=2",
                                    "--include-dashboard=false", f"--temp-dir={temp}",
                                    "--block"])
    try:
        deadline = time.monotonic() + 180
        while not cluster_up(address):
            assert head.running(), head.log_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray head did not come up"
            time.sleep(2)
        common = [f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}", "num_clients=2",
                  "num_rounds=1", "strategy=fedavg", "partition.alpha=1.0", "lr=0.01"]
        for name, extra, env in (
            ("attached", [f"backend.address={address}"], None),
            ("private", [], {"RAY_ADDRESS": address}),  # names the cluster: not used
        ):
            run_dir = tmp_path / name
            out = run_py(*common, *extra, f"hydra.run.dir={run_dir}", env=env)
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
            summary = json.loads((run_dir / "summary.json").read_text())
            assert summary["complete"] and summary["total_failures"] == 0
            assert head.running() and cluster_up(address), f"the cluster stopped after {name}"
    finally:
        procs.stop_all()
    assert procs.leftovers() == set()  # exactly the processes this test started are gone
