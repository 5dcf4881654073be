"""Real deployments on this machine: a SuperLink, SuperNodes and `flwr run` as separate
processes talking over loopback, as on separate hosts. Slow (each ClientApp task is a fresh
Python process); every process a test starts is checked to be gone when it ends."""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flayer.data.federated import dataset
from flayer.deploy.local import LocalDeployment, find_run_dir, free_port
from flayer.deploy.processes import members, running
from flayer.deploy.security import make_node_key
from flayer.state.personal import state_hash
from flayer.state.store import NodeStates, run_key
from tests import hubdata
from tests.helpers import ROOT, make_config, small_data_tuning, write_fake_fmnist
from tests.system.test_node_data import write_pfllib_client

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 1200.0


@pytest.fixture
def deploy(tmp_path):
    """Start LocalDeployments; on teardown stop them and check nothing they started lives."""
    made: list[LocalDeployment] = []

    def start(nodes: int, **options) -> LocalDeployment:
        d = LocalDeployment(tmp_path / f"work-{len(made)}", nodes, **options)
        made.append(d)
        d.start()
        return d

    yield start
    for d in made:
        d.close()
    for d in made:
        assert d.procs.leftovers() == set()


@pytest.fixture
def common(tmp_path, cache_dir):
    """Overrides for small, quick runs on fake Fashion-MNIST (split and cached up front)."""
    data = write_fake_fmnist(tmp_path / "fmnist", n_train=300, n_test=60)

    def overrides(*extra: str, nodes: int = 3) -> str:
        args = [f"dataset.path={data}", f"cache_dir={cache_dir}", f"num_clients={nodes}",
                "batch_size=10", "lr=0.01", *small_data_tuning(extra),
                *extra]
        dataset(make_config(*args))  # the split and the pool, before the nodes need them
        return " ".join(args)

    return overrides


def wait_for(predicate, timeout: float = RUN_TIMEOUT, what: str = "", run=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if run is not None and not run.running():
            raise AssertionError(f"flwr run ended while waiting for {what}:\n"
                                 f"{run.log_text()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def client_rows(run_dir: Path) -> list[dict]:
    file = run_dir / "clients.csv"
    if not file.exists():
        return []
    with open(file) as f:
        return list(csv.DictReader(f))


def rounds_done(run_dir: Path, r: int, clients: int) -> bool:
    return sum(1 for row in client_rows(run_dir) if int(row["round"]) == r) == clients


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def by_round(rows: list[dict]) -> dict[int, dict[int, dict]]:
    table: dict[int, dict[int, dict]] = {}
    for row in rows:
        table.setdefault(int(row["round"]), {})[int(row["client"])] = row
    return table


def test_three_supernodes_keep_personal_state_across_rounds_and_a_restart(
        deploy, common, tmp_path):
    """FLAYER, 3 SuperNodes, 2 rounds; SuperNode 2 is restarted between rounds 1 and 2."""
    pause, out = tmp_path / "pause", tmp_path / "out"
    pause.write_text("2\n")  # the server will hold before round 2, however fast it runs
    d = deploy(3, insecure=True)
    run = d.submit(common("strategy=flayer", "num_rounds=2", f"backend.pause_file={pause}"), out)
    run_dir = wait_for(lambda: find_run_dir(out), what="the run directory", run=run)
    wait_for(lambda: rounds_done(run_dir, 1, 3), what="round 1", run=run)
    wait_for(lambda: "holding before round 2" in run.log_text(), what="the hold", run=run)
    saved = NodeStates(str(d.nodes[2].state_dir), run_key(run_dir), 2).latest()
    round1 = by_round(client_rows(run_dir))[1]
    assert float(round1[2]["state-hash"]) == state_hash(saved.arrays)  # on disk: as reported
    assert saved.meta["a_k"] == pytest.approx(float(round1[2]["accuracy"]))
    d.stop_node(2)
    assert not d.nodes[2].proc.running()
    d.start_node(2)  # a new process with the same state directory
    pause.unlink()
    outcome = d.wait(run, out, timeout=RUN_TIMEOUT)

    assert outcome.run_dir == run_dir
    for name in ("config.yaml", "metrics.csv", "clients.csv", "summary.json", "accuracy.png"):
        assert (run_dir / name).is_file(), name
    assert outcome.summary["complete"] and outcome.summary["method"] == "flayer"
    m = metrics(run_dir)
    assert [int(r["round"]) for r in m] == [0, 1, 2]
    assert [int(r["failures"]) for r in m] == [0, 0, 0]
    assert [int(r["clients_trained"]) for r in m] == [0, 3, 3]
    rows = by_round(client_rows(run_dir))
    for k in range(3):
        # each client set its round-r model up from global version r ...
        assert [float(rows[r][k]["init-version"]) for r in range(3)] == [0, 1, 2]
        # ... mixing with the a_k it measured in the round before: its state survived
        assert float(rows[1][k]["mixed-a"]) == pytest.approx(float(rows[0][k]["accuracy"]))
        assert float(rows[2][k]["mixed-a"]) == pytest.approx(float(rows[1][k]["accuracy"]))
        hashes = [float(rows[r][k]["state-hash"]) for r in range(3)]
        assert len(set(hashes)) == 3  # the personal state changed every round
        final = NodeStates(str(d.nodes[k].state_dir), run_key(run_dir), k).latest()
        assert state_hash(final.arrays) == hashes[2]


def test_a_supernode_killed_during_round_2_is_counted_and_the_run_finishes(
        deploy, common, tmp_path):
    out = tmp_path / "out"
    d = deploy(3, insecure=True)
    run = d.submit(common("strategy=flayer", "num_rounds=2", "backend.node_wait=5"), out)
    run_dir = wait_for(lambda: find_run_dir(out), what="the run directory", run=run)
    wait_for(lambda: rounds_done(run_dir, 1, 3), what="round 1", run=run)
    d.stop_node(1, kill=True)  # SIGKILL to the SuperNode and its ClientApps: its host died
    outcome = d.wait(run, out, timeout=RUN_TIMEOUT)

    assert outcome.summary["complete"] and outcome.summary["rounds_completed"] == 2
    m = metrics(run_dir)
    assert [int(r["failures"]) for r in m][:2] == [0, 0]
    assert int(m[2]["failures"]) == 2  # its training reply and its evaluation
    assert int(m[2]["clients_trained"]) == 2 and m[2]["accuracy"] != ""
    assert sorted(by_round(client_rows(run_dir))[2]) == [0, 2]
    assert outcome.summary["total_failures"] == 2


# The certificate commands of docs/deployment.md, as a user types them.
CERT_COMMANDS = """
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \\
  -keyout ca.key -out ca.crt -subj "/CN=flayer CA" \\
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \\
  -keyout server.key -out server.csr -subj "/CN=flayer SuperLink"
printf "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:$SUPERLINK_IP\\n" > server.ext
printf "basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature,keyEncipherment\\n" >> server.ext
printf "extendedKeyUsage=serverAuth\\n" >> server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \\
  -out server.crt -extfile server.ext
"""


def test_tls_with_certificates_made_by_the_test_and_nodes_with_their_own_cifar10(
        common, tmp_path, cache_dir):
    """The one-machine command with TLS from docs/deployment.md's openssl commands; each SuperNode
    brings its own CIFAR-10 data (a folder in the hub's save_to_disk format, PFLlib client
    files), the SuperLink none: no dataset.path, no hub (unreachable, nothing in the Hugging
    Face cache), so it builds the model from the dataset's fixed spec."""
    certs = tmp_path / "certs"
    certs.mkdir()
    made = subprocess.run(["bash", "-euc", CERT_COMMANDS], cwd=certs, capture_output=True,
                          text=True, env={"SUPERLINK_IP": "127.0.0.2", "PATH": "/usr/bin:/bin"})
    assert made.returncode == 0, made.stderr
    own = hubdata.write_cifar10(tmp_path / "node-0-data", n_per_split=20)  # 40 images
    x, y = hubdata.expected_pool(hubdata.cifar10_dict(n_per_split=25, seed=1), "img", "label")
    write_pfllib_client(tmp_path / "node-1-data", x, y, n_train=40)  # 40 train, 10 test
    cmd = [sys.executable, "-m", "flayer.deploy", "local", "--nodes", "2",
           "--tls-dir", str(certs), "--data-dir", str(own),
           "--data-dir", str(tmp_path / "node-1-data"),
           "--work-dir", str(tmp_path / "work"), "--output-dir", str(tmp_path / "out"),
           "strategy=fedavg", "num_rounds=1", "dataset=cifar10", f"cache_dir={cache_dir}"]
    no_hub = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens there
              "HF_HOME": str(tmp_path / "empty-hf-home")}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env=no_hub)
    seen: set[int] = set()
    while proc.poll() is None:  # everything the command started, while it runs
        seen |= members({proc.pid})
        time.sleep(1.0)
    text = proc.stdout.read()
    assert proc.returncode == 0, text[-4000:]
    assert running(seen) == set()
    assert len(seen) >= 4  # the command, SuperLink, 2 SuperNodes (and their helpers)
    assert "insecure" not in text.lower()
    run_dir = Path(text.split("results: ")[1].split()[0])
    assert run_dir.parent == tmp_path / "out"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] and summary["total_failures"] == 0
    rows = by_round(client_rows(run_dir))
    assert {k: int(r["test_samples"]) for k, r in rows[1].items()} == {0: 10, 1: 10}
    assert summary["dataset"] == "cifar10"
    superlink_log = (tmp_path / "work" / "logs" / "superlink.log").read_text()
    assert "--insecure" not in superlink_log


def test_supernode_authentication_admits_registered_nodes_only(deploy, common, tmp_path):
    d = deploy(2, auth=True)  # TLS, a key per SuperNode, registered with the SuperLink
    listed = d.flwr("supernode", "list", "--format", "json")
    assert listed.returncode == 0 and listed.stdout.count('"node-id"') >= 2, listed.stdout
    outcome = d.run(common("strategy=fedavg", "num_rounds=1", nodes=2), tmp_path / "out",
                    timeout=RUN_TIMEOUT)
    assert outcome.summary["complete"] and outcome.summary["total_failures"] == 0

    stranger = make_node_key(tmp_path / "keys", "stranger")  # never registered
    node = d.nodes[0]
    argv = d.node_argv(node)
    argv[argv.index(str(node.key.private))] = str(stranger.private)
    argv[argv.index("--port") + 1] = str(free_port())
    intruder = d.procs.start("stranger", argv + ["--max-retries", "0"])
    wait_for(lambda: not intruder.running(), timeout=120, what="the stranger to be refused")
    assert intruder.popen.returncode != 0
    assert "Failed to activate SuperNode" in intruder.log_text()
