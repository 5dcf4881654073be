"""What does running FLAYER through Flower + Ray cost over the same work in one process?

One warm FLAYER round (round 2) with 20 clients on Fashion-MNIST through our simulation,
against the same rounds run in this process by the package's in-process grid
(`flayer.apps.inprocess`: the same strategy and executor, messages handed straight to it,
one client after another): train every client with adaptive rates and mask its
upload, aggregate, then initialize every client from the new global model (mix + head pass)
and evaluate it. Prints both times and, last, their ratio. Ray's start-up and the
simulation's peak memory (summed PSS of the whole process tree, from
/proc/<pid>/smaps_rollup) are printed separately.

    python bench/overhead.py [--clients 20] [--rounds 2] [overrides...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from hydra.errors import HydraException  # noqa: E402

from bench.memory import PeakMemory  # noqa: E402
from flayer.apps.inprocess import InProcessGrid, run_in_process  # noqa: E402
from flayer.config.compose import compose_dict  # noqa: E402
from flayer.config.schema import to_config  # noqa: E402
from flayer.config.validation import validate  # noqa: E402
from flayer.data.federated import client_splits, source_of  # noqa: E402
from flayer.results.record import RoundRecord  # noqa: E402
from flayer.util.errors import ConfigError, DataError  # noqa: E402


# ---- the simulation ---------------------------------------------------------------------------
def simulated_rounds(cfg) -> tuple[float, float, dict[int, float]]:
    """(seconds before round 0, seconds after the last round, round -> seconds) of a real
    simulation. Ray and its actors start before round 0; the actors' imports and first data
    loads fall into rounds 0 and 1, which is why a later round is timed."""
    from flayer.run.simulation import run_apps

    seen: list[tuple[float, RoundRecord]] = []
    with tempfile.TemporaryDirectory(prefix="flayer-overhead-") as store:
        t0 = time.perf_counter()
        run_apps(cfg, lambda rec: seen.append((time.perf_counter(), rec)), Path(store))
        t1 = time.perf_counter()
    first_end, first = seen[0]
    return first_end - first.seconds - t0, t1 - seen[-1][0], {r.round: r.seconds for _, r in seen}


# ---- the same rounds in one process --------------------------------------------------------------
def in_process_rounds(cfg) -> dict[int, float]:
    """round -> seconds of the same run in this process (no Ray, no message transport): one
    executor serving every client, torch using every CPU, as the simulation's actors together
    do."""
    every_cpu = replace(cfg, backend=replace(cfg.backend, client_cpus=float(os.cpu_count() or 1)))
    seen: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="flayer-overhead-") as store:
        grid = InProcessGrid(every_cpu, store=Path(store), executors=1)
        run_in_process(every_cpu, lambda rec: seen.__setitem__(rec.round, rec.seconds), grid)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="the last round is the one timed")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. partition.alpha=0.5")
    args = parser.parse_args()
    try:
        cfg = to_config(compose_dict([f"num_clients={args.clients}", f"num_rounds={args.rounds}",
                                      "progress=false", *args.overrides]))
        validate(cfg)
        client_splits(cfg)  # build the data cache outside both timings
    except (ConfigError, DataError, HydraException) as exc:  # a typo'd or bad setting
        print(f"error: {exc}", file=sys.stderr)  # one line, as run.py says it
        sys.exit(2)
    r = args.rounds
    split = (", ".join(f"{k}={v}" for k, v in cfg.partition.summary_fields().items())
             if source_of(cfg).partitioned else "its own clients")
    print(f"{cfg.strategy.name}, {cfg.dataset.name}, {cfg.num_clients} clients, {split}, "
          f"batch {cfg.batch_size}; timing round {r}", flush=True)

    mem = PeakMemory()
    mem.start()
    startup, shutdown, sim = simulated_rounds(cfg)
    peak = mem.stop()
    print(f"simulation: {startup:.1f} s before round 0, {shutdown:.1f} s after the last round")
    print(f"peak memory of the simulation's process tree (summed PSS): {peak / 2**30:.2f} GiB")
    print("simulation rounds: " + ", ".join(f"{k}: {v:.1f} s" for k, v in sim.items()))

    plain = in_process_rounds(cfg)
    print(f"in one process ({torch.get_num_threads()} torch threads) rounds: "
          + ", ".join(f"{k}: {v:.1f} s" for k, v in plain.items()))
    print(f"ray and actor start-up, estimated as round 0 in the simulation minus round 0 in "
          f"one process (not in the ratio): {startup + sim[0] - plain[0]:.1f} s")
    print(f"simulation round {r}: {sim[r]:.2f} s")
    print(f"in-process round {r}: {plain[r]:.2f} s")
    print(f"ratio simulation / in-process: {sim[r] / plain[r]:.2f}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: a benchmark writes nothing to keep
        print("stopped (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
