"""The pieces of a deployment that need no Flower process: stopping process trees, the
strings handed to Flower's CLIs, certificates and SuperNode keys."""

import io
import os
import signal
import ssl
import subprocess
import sys
import time
import zipfile

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.build import build_fab_from_files
from flwr.cli.supernode.register import try_load_public_key
from flwr.common.config import parse_config_args

from flayer.deploy.cli import with_num_clients
from flayer.deploy.local import LocalDeployment, node_config
from flayer.deploy.processes import ProcessSet, members, running
from flayer.deploy.security import make_node_key, make_tls, subject_alt_names
from flayer.util.errors import ConfigError
from tests.helpers import ROOT

TREE = ("sleep 300 & setsid sleep 300 & (sleep 300 & wait) & echo started; wait")


def _wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("kill", [False, True])
def test_stopping_a_process_stops_everything_it_started(tmp_path, kill):
    procs = ProcessSet(tmp_path / "logs")
    try:
        other = procs.start("other", ["sleep", "300"])
        tree = procs.start("tree", ["bash", "-c", TREE])
        assert _wait_for(lambda: len(members({tree.pid})) == 5)  # bash, 3 sleeps, a subshell
        assert "started" in tree.log_text()
        inside = members({tree.pid})
        procs.stop(tree, kill=kill)
        assert running(inside) == set()
        assert other.running()  # only what was asked
        assert procs.leftovers() == {other.pid}
    finally:
        procs.stop_all()
    assert procs.leftovers() == set()


def test_a_context_manager_stops_its_processes_on_an_exception(tmp_path):
    with pytest.raises(KeyboardInterrupt), ProcessSet(tmp_path / "logs") as procs:
        procs.start("tree", ["bash", "-c", TREE])
        assert _wait_for(lambda: len(procs.leftovers()) == 5)
        raise KeyboardInterrupt
    assert procs.leftovers() == set()


class _Stopped(Exception):
    pass


def _raise_stopped(signum, frame):
    raise _Stopped


def test_a_signal_while_a_process_starts_never_loses_it(tmp_path, monkeypatch):
    """A handler that raises as Popen returns (after the fork) would leave the new process
    unknown to the set, in a session of its own, running for ever."""
    real_popen = subprocess.Popen

    def popen_then_signal(*args, **kwargs):
        popen = real_popen(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before this returns
        return popen

    monkeypatch.setattr(subprocess, "Popen", popen_then_signal)
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    procs = ProcessSet(tmp_path / "logs")
    try:
        with pytest.raises(_Stopped):
            procs.start("sleeper", ["sleep", "300"])
        assert len(procs.members()) == 1  # known, so it can be stopped
        procs.stop_all()
        assert procs.leftovers() == set()
        assert signal.getsignal(signal.SIGTERM) is _raise_stopped  # the handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)
        procs.stop_all()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_local_command_stops_everything_on_a_signal(tmp_path, fake_fmnist, sig):
    """SIGTERM or Ctrl-C (SIGINT) to the command while it starts its processes: none of
    them is left."""
    cmd = [sys.executable, "-m", "flayer.deploy", "local", "--nodes", "2", "--insecure",
           "--work-dir", str(tmp_path / "work"), "--output-dir", str(tmp_path / "out"),
           f"dataset.path={fake_fmnist}", f"cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    log = tmp_path / "work" / "logs" / "superlink.log"
    try:
        assert _wait_for(log.exists, timeout=120)
        started = members({proc.pid})
        assert len(started) >= 2  # the command and its SuperLink (at least)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, out
        assert sig != signal.SIGINT or "every process this command started was stopped" in out
        assert _wait_for(lambda: not running(started), timeout=30), out
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in members({proc.pid}):
            os.kill(pid, 9)


def test_num_clients_is_the_number_of_nodes():
    assert with_num_clients(["strategy=ditto"], 3) == ["strategy=ditto", "num_clients=3"]
    assert with_num_clients(["num_clients=3"], 3) == ["num_clients=3"]
    with pytest.raises(ConfigError, match="must equal --nodes"):
        with_num_clients(["num_clients=5"], 3)


def test_node_config_and_run_config_survive_flowers_parsers(tmp_path):
    parsed = parse_config_args([node_config(2, 3, tmp_path / "a b", tmp_path / "d")])
    assert parsed == {"partition-id": 2, "num-partitions": 3, "state-dir": str(tmp_path / "a b"),
                      "data-dir": str(tmp_path / "d")}
    deployment = LocalDeployment(tmp_path / "work", 1, insecure=True)
    deployment.work_dir.mkdir(parents=True)
    overrides = "strategy=flayer 'hydra.run.dir=\"x y\"' seed=1"
    file = deployment.write_run_config(overrides, tmp_path / "out")
    assert parse_config_args([str(file)]) == {"overrides": overrides,
                                              "output-dir": str(tmp_path / "out")}
    deployment.port = 8123
    text = deployment.write_cli_config().read_text()
    assert 'address = "127.0.0.1:8123"' in text and "insecure = true" in text


def test_certificates_verify_for_the_superlinks_addresses(tmp_path):
    assert subject_alt_names(["10.0.0.5", "link.example.org"]) == (
        "IP:127.0.0.1,DNS:localhost,IP:10.0.0.5,DNS:link.example.org")
    tls = make_tls(tmp_path / "certs", ["10.0.0.5"])
    out = subprocess.run(["openssl", "verify", "-CAfile", tls.ca_cert, tls.server_cert],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = subprocess.run(["openssl", "x509", "-in", tls.server_cert, "-noout", "-text"],
                          capture_output=True, text=True).stdout
    assert "IP Address:127.0.0.1" in text and "IP Address:10.0.0.5" in text
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.server_cert, tls.server_key)  # what the SuperLink loads


def test_node_keys_are_what_flower_reads(tmp_path):
    key = make_node_key(tmp_path / "keys", "node-0")
    private = load_ssh_private_key(key.private.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert try_load_public_key(key.public)  # what `flwr supernode register` accepts
    assert oct(key.private.stat().st_mode & 0o777) == "0o600"


def test_the_shipped_app_holds_code_and_config_but_no_outputs_or_caches():
    """What `flwr run` packs: the project's files minus what .gitignore leaves out."""
    files = {"pyproject.toml": ROOT / "pyproject.toml", ".gitignore": ROOT / ".gitignore",
             "conf/config.yaml": ROOT / "conf/config.yaml",
             "flayer/apps/client_app.py": ROOT / "flayer/apps/client_app.py",
             "outputs/deploy/2026-01-01-flayer-run1/summary.json": b"{}",
             "outputs/deploy-local/2026-01-01/certs/server.json": b"{}",
             "multirun/x/config.yaml": b"a: 1", ".cache/flayer/splits.json": b"{}"}
    fab, _ = build_fab_from_files(files)
    names = set(zipfile.ZipFile(io.BytesIO(fab)).namelist())
    assert {"conf/config.yaml", "flayer/apps/client_app.py"} <= names
    assert not [n for n in names if n.startswith(("outputs/", "multirun/", ".cache/"))]


def test_the_deployment_page_shows_what_the_deployment_tests_run():
    from tests.system.test_deploy import CERT_COMMANDS

    section = (ROOT / "docs" / "deployment.md").read_text()
    assert CERT_COMMANDS.strip() in section
    assert "python -m flayer.deploy local --nodes 3 strategy=flayer num_rounds=2" in section
    for flag in ("--auth", "--tls-dir", "--insecure", "--data-dir", "--output-dir"):
        assert f"`{flag}" in section
