"""One simulated experiment from a composed config: check it, then run it into its folder, or
continue the run already there (`resume`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from flayer.config.schema import Config
from flayer.config.validation import validate
from flayer.protocol.rounds import RoundCallback
from flayer.run.folder import RunPlan, plan_run, run_plan, saved_summary
from flayer.run.simulation import run_apps
from flayer.run.stops import stop_on_signals
from flayer.state.checkpoint import Checkpointing
from flayer.state.store import ClientStore, store_root

# runs a whole simulation: (config, round sink, client state folder, checkpointing)
SimEngine = Callable[[Config, RoundCallback, Path, Checkpointing], None]


def plan(dcfg: DictConfig, run_dir: Path, overrides: Sequence[str] = ()) -> RunPlan:
    """What the command will do, every setting and the folder checked; nothing is written."""
    return plan_run(dcfg, run_dir, overrides, validate)


def run(dcfg: DictConfig, run_dir: Path, overrides: Sequence[str] = (),
        engine: SimEngine = run_apps) -> dict[str, Any]:
    """Run the experiment into run_dir; with `resume`, continue the run there from its last
    checkpoint (a complete run with the same num_rounds is left as it is). `overrides` are
    those the config was composed from (saved, so that a later process can continue it);
    `engine` runs the rounds (the Ray simulation, or `flayer.apps.inprocess.engine`).
    SIGINT and SIGTERM raise `flayer.run.stops.Stopped` (after the partial results are
    written)."""
    with stop_on_signals():
        todo = plan(dcfg, run_dir, list(overrides))
        shown = todo.run_dir.resolve()
        if todo.complete:
            summary = saved_summary(todo.run_dir)
            print(f"the run in {shown} is complete ({summary['rounds_completed']} rounds); "
                  "nothing to do")
            return summary
        print(f"run folder: {shown}" + (" (continued)" if todo.continued else ""))
        cfg = todo.cfg
        store = ClientStore(store_root(todo.run_dir, cfg.backend.state_dir))
        summary = run_plan(
            todo, lambda on_round, checkpointing: engine(cfg, on_round, store.root,
                                                         checkpointing),
            store, progress=cfg.progress)
    print(f"results: {shown}")
    return summary
