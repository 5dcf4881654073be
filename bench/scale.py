"""How does a simulation's cost grow with the number of clients?

For Fashion-MNIST split over N = 100, 1,000 and 10,000 clients (iid: a Dirichlet(0.1) split
cannot give 10,000 clients of this dataset a few samples of their own), 10 clients sampled
per round, FedAvg and FLAYER (`strategy.sync=lazy`): seconds per training round (median of
rounds 2-3; only the first and last rounds evaluate), seconds of one all-client evaluation
(the last round's time less a training round's; for FLAYER every evaluated client also takes in
the newest global model first), the driver's peak RSS and
the whole process tree's peak PSS (summed from /proc/<pid>/smaps_rollup). Then FLAYER with
ResNet-18 on 1,000 clients of generated CIFAR-10-shaped data (20 images each), its client
state store on disk. Each case runs in its own process, so that memory is measured per case.

    python bench/scale.py [--clients 100 1000 10000] [--methods fedavg flayer] [--no-resnet]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.memory import PeakMemory  # noqa: E402

ROUNDS = 4  # rounds 1-3 train only; round 0 and the last evaluate every client
RESNET_CLIENTS = 1000
RESNET_PER_CLIENT = 20


def case_overrides(method: str, clients: int, model: str, data: Path | None) -> list[str]:
    out = [f"strategy={method}", f"num_clients={clients}", f"join_ratio={10 / clients}",
           f"num_rounds={ROUNDS}", "eval_every=1000", "partition=iid", "progress=false"]
    if method == "flayer":
        out.append("strategy.sync=lazy")
    if model == "resnet18":
        out += ["model=resnet18", "dataset=cifar10", f"dataset.path={data}"]
    return out


def write_cifar_like(folder: Path, images: int) -> Path:
    """A CIFAR-10-shaped save_to_disk dataset (32x32 RGB, 10 classes), classes told apart by
    colour; 75% of rows in train, the rest in test."""
    import numpy as np
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from PIL import Image as PILImage

    if (folder / "dataset_dict.json").exists():
        return folder
    rng = np.random.default_rng(0)
    names = [f"class{k}" for k in range(10)]
    features = Features({"img": Image(), "label": ClassLabel(names=names)})

    def rows(n: int, offset: int) -> dict:
        labels = [(offset + i) % 10 for i in range(n)]
        imgs = []
        for label in labels:
            base = np.full((32, 32, 3), 25 * label, dtype=np.int16)
            noise = rng.integers(-40, 40, size=(32, 32, 3))
            imgs.append(PILImage.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)))
        return {"img": imgs, "label": labels}

    train = int(images * 0.75)
    DatasetDict({
        "train": Dataset.from_dict(rows(train, 0), features=features),
        "test": Dataset.from_dict(rows(images - train, train), features=features),
    }).save_to_disk(str(folder))
    return folder


def run_case(overrides: list[str]) -> dict:
    """In this process: one simulation; its round times and this process's peak RSS."""
    from flayer.config.compose import compose_dict
    from flayer.config.schema import to_config
    from flayer.config.validation import validate
    from flayer.data.federated import client_splits
    from flayer.run.simulation import run_apps
    from flayer.state.store import ClientStore

    cfg = to_config(compose_dict(overrides))
    validate(cfg)
    client_splits(cfg)  # the data cache, outside the timings
    seconds: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="flayer-scale-") as run_dir:
        store = ClientStore(Path(run_dir) / "state")
        start = time.perf_counter()
        run_apps(cfg, lambda rec: seconds.__setitem__(rec.round, rec.seconds), store.root)
        wall = time.perf_counter() - start
        store_bytes = store.nbytes()
    train = statistics.median([seconds[2], seconds[3]])
    return {
        "train_round_s": train,
        "eval_all_s": seconds[ROUNDS] - train,  # round 0 also holds the actors' start-up
        "round0_s": seconds[0],
        "last_round_s": seconds[ROUNDS],
        "wall_s": wall,
        "driver_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "store_mib": store_bytes / 2**20,
    }


def measure(overrides: list[str]) -> dict:
    """One case in a child process, the whole process tree's peak PSS sampled from here."""
    child = subprocess.Popen([sys.executable, __file__, "--case", json.dumps(overrides)],
                             stdout=subprocess.PIPE, text=True)
    mem = PeakMemory(root=child.pid, interval=1.0)
    mem.start()
    out, _ = child.communicate()
    peak = mem.stop()
    if child.returncode != 0:
        raise SystemExit(f"case {overrides} failed with exit code {child.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["tree_pss_gib"] = peak / 2**30
    return result


def show(label: str, r: dict) -> None:
    print(f"{label:<34} {r['train_round_s']:>9.2f} {r['eval_all_s']:>9.1f} "
          f"{r['driver_rss_gib']:>9.2f} {r['tree_pss_gib']:>9.2f} {r['store_mib']:>9.1f}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--methods", nargs="+", default=["fedavg", "flayer"])
    parser.add_argument("--no-resnet", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case here
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))), flush=True)
        return

    print(f"{os.cpu_count()} CPUs; Fashion-MNIST iid, 10 clients sampled per round, "
          f"{ROUNDS} rounds (evaluation in rounds 0 and {ROUNDS} only)")
    print(f"{'case':<34} {'train s':>9} {'eval s':>9} {'drv GiB':>9} {'PSS GiB':>9} "
          f"{'store MiB':>9}")
    results: dict[tuple[str, int], dict] = {}
    for method in args.methods:
        for n in args.clients:
            results[method, n] = measure(case_overrides(method, n, "cnn", None))
            label = f"{method}{' (lazy)' if method == 'flayer' else ''}, {n} clients"
            show(label, results[method, n])
    for method in args.methods:
        small, large = min(args.clients), max(args.clients)
        if small != large:
            ratio = results[method, large]["train_round_s"] / results[method, small][
                "train_round_s"]
            print(f"{method}: train round at {large} / at {small} clients: {ratio:.2f}")
    if not args.no_resnet:
        data = write_cifar_like(Path(tempfile.gettempdir()) / "flayer-scale-cifar",
                                RESNET_CLIENTS * RESNET_PER_CLIENT)
        r = measure(case_overrides("flayer", RESNET_CLIENTS, "resnet18", data))
        show(f"flayer (lazy) resnet18, {RESNET_CLIENTS} clients", r)


if __name__ == "__main__":
    main()
