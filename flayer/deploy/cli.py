"""`python -m flayer.deploy local [options] [hydra overrides]`: try a real deployment on one
machine. Starts a SuperLink and N SuperNodes on loopback (TLS by default), runs the experiment
with `flwr run`, prints where the results are, and stops exactly the processes it started,
also on Ctrl-C, SIGTERM or failure."""

from __future__ import annotations

import argparse
import atexit
import logging
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from flayer.deploy.local import DeployError, LocalDeployment
from flayer.deploy.security import TlsFiles, check_tls, make_tls
from flayer.results.recorder import accuracy_text
from flayer.util.commands import module_command
from flayer.util.errors import ConfigError, DataError

log = logging.getLogger("flayer.deploy")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=module_command("flayer.deploy"),
                                description="Flower deployment of flayer experiments")
    sub = p.add_subparsers(dest="command", required=True)
    local = sub.add_parser("local", help="a SuperLink and N SuperNodes on this machine, then "
                                         "one run; results as in simulation")
    local.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py")
    local.add_argument("--nodes", type=int, default=3, help="SuperNodes (= num_clients)")
    local.add_argument("--insecure", action="store_true",
                       help="no TLS (not recommended; prints a warning)")
    local.add_argument("--auth", action="store_true",
                       help="SuperNode authentication: make a key per node and register it")
    local.add_argument("--tls-dir", type=Path, default=None,
                       help="ca.crt, server.crt and server.key to use (made there if missing)")
    local.add_argument("--data-dir", type=Path, action="append", default=None,
                       help="a folder of own data for the next SuperNode (node config "
                            "data-dir); give it once per SuperNode")
    local.add_argument("--work-dir", type=Path, default=None,
                       help="logs, Flower homes, certificates, node state "
                            "(default outputs/deploy-local/<time>)")
    local.add_argument("--output-dir", type=Path, default=Path("outputs/deploy"),
                       help="where the run directory is written (default outputs/deploy)")
    local.add_argument("--timeout", type=float, default=24 * 3600.0,
                       help="seconds to wait for the run to finish")
    return p


def with_num_clients(overrides: list[str], nodes: int) -> list[str]:
    """num_clients is the number of SuperNodes; a different explicit value is an error."""
    given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "num_clients"]
    if not given:
        return [*overrides, f"num_clients={nodes}"]
    if given[-1] != str(nodes):
        raise ConfigError("num_clients", given[-1],
                          f"must equal --nodes ({nodes}): every client is one SuperNode")
    return overrides


def check(overrides: list[str], own_data: bool) -> None:
    """Compose and check the config here first, so a typo fails before anything starts.
    With the nodes' own data the data checks are left to the nodes."""
    from flayer.config.compose import compose_dict, deployed_overrides
    from flayer.config.schema import to_config
    from flayer.config.validation import validate
    from flayer.data.node import NODE_DATA
    from flayer.data.sources import DATASETS
    from flayer.data.subset import refuse_fraction

    try:
        cfg = to_config(compose_dict(shlex.split(deployed_overrides(shlex.join(overrides)))))
    except Exception as exc:  # Hydra's and OmegaConf's errors name the bad override
        raise DeployError(f"the overrides do not compose: {exc}") from None
    if own_data:
        refuse_fraction(cfg.dataset.fraction, NODE_DATA)
        cfg.shift.check_samples(cfg.dataset.name, DATASETS.get(cfg.dataset.name).tokens)
    else:
        validate(cfg)


def _tls(args: argparse.Namespace) -> TlsFiles | None:
    if args.tls_dir is None:
        return None
    d = args.tls_dir.expanduser().resolve()
    files = TlsFiles(d / "ca.crt", d / "server.crt", d / "server.key")
    if all(f.is_file() for f in (files.ca_cert, files.server_cert, files.server_key)):
        check_tls(files)
        return files
    return make_tls(d)


class Interrupted(SystemExit):
    """Ctrl-C, SIGTERM or SIGHUP: unwinds through the deployment's cleanup. A SystemExit, not
    a KeyboardInterrupt, so that no library on the way can catch and swallow it."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(128 + signum)


def run_local(args: argparse.Namespace) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    overrides = with_num_clients(list(args.overrides), args.nodes)
    if args.data_dir is not None and len(args.data_dir) != args.nodes:
        raise ConfigError("--data-dir", len(args.data_dir), f"give one folder per SuperNode "
                          f"({args.nodes})")
    check(overrides, own_data=args.data_dir is not None)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    work = (args.work_dir or Path("outputs/deploy-local") / stamp).expanduser().resolve()
    output = args.output_dir.expanduser().resolve()
    deployment = LocalDeployment(work, args.nodes, insecure=args.insecure, tls=_tls(args),
                                 auth=args.auth, data_dirs=args.data_dir)
    atexit.register(deployment.close)
    with deployment:
        log.info("SuperLink at %s, %d SuperNodes; logs in %s", deployment.address, args.nodes,
                 deployment.procs.log_dir)
        outcome = deployment.run(shlex.join(overrides), output, timeout=args.timeout)
    s = outcome.summary
    print(f"results: {outcome.run_dir}")
    print(f"{accuracy_text(s)}, failures {s.get('total_failures')}")
    return 0 if s.get("complete") else 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("flayer").setLevel(logging.INFO)
    args = parser().parse_args(argv)
    try:
        return run_local(args)
    except (ConfigError, DataError, DeployError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted) as exc:
        print("interrupted: every process this command started was stopped", file=sys.stderr)
        return exc.code if isinstance(exc, Interrupted) else 130
