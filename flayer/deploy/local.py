"""A real deployment on one machine: a SuperLink and N SuperNodes on loopback, and `flwr run`
with its own Flower home, exactly as on separate hosts (see docs/deployment.md).
Every process it starts is stopped on close, also after an error or Ctrl-C.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flayer.deploy.processes import ProcessSet, Started
from flayer.deploy.security import NodeKey, TlsFiles, make_node_key, make_tls
from flayer.protocol import keys
from flayer.util.commands import python_command

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parents[2]  # the Flower app `flwr run` ships (pyproject)
CONNECTION = "flayer-local"  # the SuperLink connection's name in the CLI's config.toml
OFFLINE_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


class DeployError(RuntimeError):
    """The deployment could not start or its run failed; says where to look."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flower_bin(name: str) -> str:
    """A Flower executable next to this Python (a venv need not be activated), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise DeployError(f"{name} not found next to {sys.executable} or on PATH; "
                          f"install flayer ({python_command('-m', 'pip', 'install', '-e', '.')})")
    return found


def toml_str(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def node_config(partition_id: int, num_partitions: int, state_dir: Path | None = None,
                data_dir: Path | None = None) -> str:
    """The `--node-config` value of one SuperNode (strings TOML-quoted)."""
    parts = [f"{keys.NODE_PARTITION_ID}={partition_id}",
             f"{keys.NODE_NUM_PARTITIONS}={num_partitions}"]
    if state_dir is not None:
        parts.append(f"{keys.NODE_STATE_DIR}={toml_str(str(state_dir))}")
    if data_dir is not None:
        parts.append(f"{keys.NODE_DATA_DIR}={toml_str(str(data_dir))}")
    return " ".join(parts)


@dataclass
class Node:
    index: int  # also its partition id
    port: int  # its ClientApp runtime API (one per SuperNode on a host)
    home: Path  # its FLWR_HOME (installed app bundles)
    state_dir: Path
    data_dir: Path | None = None
    key: NodeKey | None = None
    proc: Started | None = None


@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    run_dir: Path
    summary: dict


class LocalDeployment:
    """SuperLink + SuperNodes + `flwr run` on 127.0.0.1, all under `work_dir`.

    Security: TLS with `tls` (certificates made here when None and not `insecure`);
    SuperNode authentication with `auth` (keys made and registered here). `insecure=True`
    turns TLS off, with a warning.
    """

    def __init__(self, work_dir: Path, num_nodes: int, *, insecure: bool = False,
                 tls: TlsFiles | None = None, auth: bool = False,
                 data_dirs: Sequence[Path] | None = None, project: Path = PROJECT) -> None:
        if num_nodes < 1:
            raise DeployError("a deployment needs at least one SuperNode")
        if insecure and (auth or tls is not None):
            raise DeployError("insecure mode has no TLS, and SuperNode authentication needs TLS")
        if data_dirs is not None and len(data_dirs) != num_nodes:
            raise DeployError(f"{len(data_dirs)} data folders for {num_nodes} SuperNodes")
        if not (project / "pyproject.toml").is_file():
            raise DeployError(f"no pyproject.toml in {project}: `flwr run` ships the app from "
                              "a source checkout; install flayer with "
                              f"{python_command('-m', 'pip', 'install', '-e', '.')}")
        self.work_dir = work_dir.expanduser().resolve()
        self.num_nodes = num_nodes
        self.insecure = insecure
        self.tls = tls
        self.auth = auth
        self.project = project
        self.port = 0
        self.cli_home = self.work_dir / "cli"
        env = {**os.environ, **OFFLINE_ENV}
        # Flower starts its helpers (flower-superexec, flwr-clientapp) by name: put this
        # Python's scripts first on PATH so they are found without an activated venv
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        self.procs = ProcessSet(self.work_dir / "logs", env)
        self.superlink: Started | None = None
        self.nodes = [
            Node(index=i, port=0, home=self.work_dir / f"node-{i}" / "flwr-home",
                 state_dir=self.work_dir / f"node-{i}" / "state",
                 data_dir=None if data_dirs is None else Path(data_dirs[i]).resolve())
            for i in range(num_nodes)
        ]

    # ---- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process this deployment started (and what they started)."""
        self.procs.stop_all()

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.insecure:
            log.warning("insecure mode: no TLS; anyone who reaches the SuperLink's port can "
                        "join or read the traffic. Use it only on a trusted network")
        elif self.tls is None:
            self.tls = make_tls(self.work_dir / "certs")
        self.start_superlink()
        self.write_cli_config()
        if self.auth:
            for node in self.nodes:
                node.key = make_node_key(self.work_dir / "keys", f"node-{node.index}")
                self.register(node.key)
        for node in self.nodes:
            self.start_node(node.index)

    def start_superlink(self) -> None:
        self.port = free_port()
        argv = [flower_bin("flower-superlink"), "--host", "127.0.0.1", "--port", str(self.port),
                "--disable-runtime-dependency-installation"]
        argv += self._superlink_security()
        self.superlink = self.procs.start(
            "superlink", argv, env={"FLWR_HOME": str(self.work_dir / "superlink")})
        self._wait_for_port(self.port, self.superlink)

    def _superlink_security(self) -> list[str]:
        if self.insecure:
            return ["--insecure"]
        assert self.tls is not None
        argv = ["--ssl-ca-certfile", str(self.tls.ca_cert), "--ssl-certfile",
                str(self.tls.server_cert), "--ssl-keyfile", str(self.tls.server_key)]
        return argv + (["--enable-supernode-auth"] if self.auth else [])

    def _wait_for_port(self, port: int, proc: Started, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.running():
                raise DeployError(f"{proc.name} exited; see {proc.log}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.5)
        raise DeployError(f"{proc.name} did not open port {port} in {timeout:.0f} s; "
                          f"see {proc.log}")

    def write_cli_config(self) -> Path:
        """The workstation side: `$FLWR_HOME/config.toml` naming this SuperLink."""
        lines = ["[superlink]", f"default = {toml_str(CONNECTION)}", "",
                 f"[superlink.{CONNECTION}]", f"address = {toml_str(self.address)}"]
        if self.insecure:
            lines.append("insecure = true")
        else:
            assert self.tls is not None
            lines.append(f"root-certificates = {toml_str(str(self.tls.ca_cert))}")
        self.cli_home.mkdir(parents=True, exist_ok=True)
        config = self.cli_home / "config.toml"
        config.write_text("\n".join(lines) + "\n")
        return config

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """One `flwr` CLI command against this SuperLink."""
        return subprocess.run(
            [flower_bin("flwr"), *args], capture_output=True, text=True, timeout=timeout,
            env={**self.procs.env, "FLWR_HOME": str(self.cli_home)}, cwd=self.work_dir,
        )

    def register(self, key: NodeKey) -> None:
        out = self.flwr("supernode", "register", str(key.public), CONNECTION)
        if out.returncode != 0:
            raise DeployError(f"flwr supernode register failed: {out.stdout[-1500:]}"
                              f"{out.stderr[-1500:]}")

    # ---- SuperNodes ----------------------------------------------------------------------
    def node_argv(self, node: Node) -> list[str]:
        argv = [flower_bin("flower-supernode"), "--superlink", self.address,
                "--port", str(node.port),
                "--node-config", node_config(node.index, self.num_nodes, node.state_dir,
                                             node.data_dir)]
        if self.insecure:
            argv.append("--insecure")
        else:
            assert self.tls is not None
            argv += ["--root-certificates", str(self.tls.ca_cert)]
        if node.key is not None:
            argv += ["--auth-supernode-private-key", str(node.key.private)]
        return argv

    def start_node(self, index: int) -> Started:
        """Start (or restart) SuperNode `index`; a restart keeps its state directory."""
        node = self.nodes[index]
        if node.proc is not None and node.proc.running():
            raise DeployError(f"SuperNode {index} is already running")
        node.port = free_port()
        node.home.mkdir(parents=True, exist_ok=True)
        node.proc = self.procs.start(f"supernode-{index}", self.node_argv(node),
                                     env={"FLWR_HOME": str(node.home)})
        return node.proc

    def stop_node(self, index: int, *, kill: bool = False) -> None:
        """Stop SuperNode `index` and its ClientApps: SIGTERM (it leaves the federation), or
        SIGKILL with `kill` (as if its host died)."""
        proc = self.nodes[index].proc
        if proc is not None:
            self.procs.stop(proc, kill=kill)

    # ---- runs ----------------------------------------------------------------------------
    def write_run_config(self, overrides: str, output_dir: Path) -> Path:
        """The run config as a TOML file: any Hydra override survives the quoting."""
        file = self.work_dir / f"run-config-{time.time_ns()}.toml"
        file.write_text(f"{keys.RUN_OVERRIDES} = {toml_str(overrides)}\n"
                        f"{keys.RUN_OUTPUT_DIR} = {toml_str(str(output_dir))}\n")
        return file

    def submit(self, overrides: str, output_dir: Path) -> Started:
        """Start `flwr run` (logs streamed into its log file); returns at once."""
        output_dir = output_dir.expanduser().resolve()
        argv = [flower_bin("flwr"), "run", str(self.project), CONNECTION, "--stream",
                "--run-config", str(self.write_run_config(overrides, output_dir))]
        return self.procs.start(f"flwr-run-{time.time_ns()}", argv,
                                env={"FLWR_HOME": str(self.cli_home)}, cwd=self.work_dir)

    def wait(self, run: Started, output_dir: Path, timeout: float = 3600.0) -> RunOutcome:
        """Wait for `flwr run` to end; the run directory and its summary, or DeployError."""
        try:
            run.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.procs.stop(run)
            raise DeployError(f"the run did not finish in {timeout:.0f} s; see {run.log} "
                              f"and the logs in {self.procs.log_dir}") from None
        text = run.log_text()
        found = re.search(r"Successfully started run (\d+)", text)
        if run.popen.returncode != 0 or found is None:
            raise DeployError(f"flwr run failed (exit {run.popen.returncode}); see {run.log}:\n"
                              f"{text[-3000:]}")
        run_id = int(found.group(1))
        run_dir = find_run_dir(output_dir, run_id)
        if run_dir is None or not (run_dir / "summary.json").is_file():
            raise DeployError(f"run {run_id} wrote no results under {output_dir}; see "
                              f"{run.log} and {self.procs.log_dir}/superlink.log:\n{text[-3000:]}")
        summary = json.loads((run_dir / "summary.json").read_text())
        return RunOutcome(run_id=run_id, run_dir=run_dir, summary=summary)

    def run(self, overrides: str, output_dir: Path, timeout: float = 3600.0) -> RunOutcome:
        return self.wait(self.submit(overrides, output_dir), output_dir, timeout)


def find_run_dir(output_dir: Path, run_id: int | None = None) -> Path | None:
    """The run directory the ServerApp made under output_dir (for run_id, or the only one)."""
    pattern = "*-run*" if run_id is None else f"*-run{run_id}"
    found = sorted(p for p in output_dir.expanduser().glob(pattern) if p.is_dir())
    return found[-1] if found else None
