"""What does a checkpoint cost against a round?

Runs the default set-up (FLAYER, Fashion-MNIST Dir(0.1), 20 clients) for a few rounds through
the real simulation, then writes that run's checkpoint again several times (the server's
arrays flushed to disk, the client store hard-linked, the manifest of sizes and digests) and
prints the median time of one checkpoint, the median time of a round, and their ratio: once
where every client's state changed since the last checkpoint (each state file hashed, as in a
round where every client works) and once where none did (their digests taken over).

    python bench/checkpoint.py [--rounds 2] [--repeats 10] [overrides...]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flayer.config.compose import compose_dict  # noqa: E402
from flayer.run.experiment import run  # noqa: E402
from flayer.state.checkpoint import Checkpoints, ServerState  # noqa: E402
from flayer.state.store import ClientStore, store_root  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args()
    overrides = [f"num_rounds={args.rounds}", "progress=false", *args.overrides]
    with tempfile.TemporaryDirectory(prefix="flayer-checkpoint-") as tmp:
        run_dir = Path(tmp) / "run"
        dcfg = compose_dict(overrides)
        run(dcfg, run_dir, overrides)
        with open(run_dir / "metrics.csv", newline="") as f:
            rounds = [float(r["round_seconds"]) for r in csv.DictReader(f)
                      if int(r["round"]) > 0]
        points = Checkpoints(run_dir)
        state = Checkpoints.load(points.latest())
        store = ClientStore(store_root(run_dir, dcfg.backend.state_dir))
        files = len(store.files())
        store_mib = store.nbytes() / 2**20
        times: dict[str, list[float]] = {"every state changed": [], "no state changed": []}
        for k in range(args.repeats):
            for j, (case, seconds) in enumerate(times.items()):
                if case == "every state changed":
                    points = Checkpoints(run_dir)  # knows no digest: hashes every file
                again = ServerState(round=state.round + 1 + 2 * k + j, version=state.version,
                                    arrays=state.arrays, meta=state.meta)
                start = time.perf_counter()
                points.save(again, store)
                seconds.append(time.perf_counter() - start)
    server_mib = sum(a.nbytes for a in state.arrays.values()) / 2**20
    round_s = statistics.median(rounds)
    print(f"{dcfg.strategy.name}, {dcfg.num_clients} clients: server arrays {server_mib:.1f} "
          f"MiB, {files} client files ({store_mib:.1f} MiB)")
    print(f"one round (median of rounds 1-{args.rounds}): {round_s:.1f} s")
    for case, seconds in times.items():
        ckpt = statistics.median(seconds)
        print(f"one checkpoint, {case} (median of {args.repeats}): {ckpt * 1000:.1f} ms "
              f"= {100 * ckpt / round_s:.2f} % of a round")


if __name__ == "__main__":
    main()
