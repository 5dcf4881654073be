"""One simulated experiment from a composed config: check it, then run it into its folder, or
continue the run already there (`resume`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from flayer.config.compose import compose_dict
from flayer.config.schema import Config, to_config
from flayer.config.validation import validate
from flayer.protocol.rounds import RoundCallback
from flayer.run.folder import check_free, open_continuation, record_run
from flayer.run.simulation import run_apps
from flayer.run.stops import stop_on_signals
from flayer.state.checkpoint import Checkpointing, Checkpoints
from flayer.state.store import ClientStore, store_root

log = logging.getLogger(__name__)


def prepare(dcfg: DictConfig, run_dir: Path) -> Config:
    """Everything that can fail on bad input for a new run, before anything is written."""
    cfg = to_config(dcfg)
    validate(cfg)
    check_free(run_dir)
    return cfg


Engine = Callable[[Config, RoundCallback, Path, Checkpointing], None]


def run(dcfg: DictConfig, run_dir: Path, overrides: Sequence[str] = (),
        engine: Engine = run_apps) -> dict[str, Any]:
    """Run the experiment into run_dir; with `resume`, continue the run there from its last
    checkpoint (a complete run with the same num_rounds is left as it is). `overrides` are
    those the config was composed from (saved, so that a later process can continue it);
    `engine` runs the rounds (the Ray simulation, or `flayer.apps.inprocess.engine`).
    SIGINT and SIGTERM raise `flayer.run.stops.Stopped` (after the partial results are written)."""
    with stop_on_signals():
        return _run(dcfg, run_dir, list(overrides), engine)


def _run(dcfg: DictConfig, run_dir: Path, overrides: list[str], engine: Engine
         ) -> dict[str, Any]:
    going_on = None
    if dcfg.resume not in (None, "auto"):
        run_dir = Path(str(dcfg.resume)).expanduser()  # the folder to continue is the run's
    if dcfg.resume is not None:
        going_on = open_continuation(run_dir, str(dcfg.resume), overrides, compose_dict)
    if going_on is None:
        cfg = prepare(dcfg, run_dir)
    else:
        if going_on.complete:
            summary = json.loads((run_dir / "summary.json").read_text())
            print(f"the run in {run_dir} is complete ({summary['rounds_completed']} rounds); "
                  "nothing to do")
            return summary
        dcfg, overrides = going_on.dcfg, going_on.overrides
        cfg = to_config(dcfg)
        validate(cfg)
    store = ClientStore(store_root(run_dir, cfg.backend.state_dir))
    resume_from = None
    if going_on is not None and going_on.checkpoint is not None:
        resume_from = Checkpoints.load(going_on.checkpoint)
        Checkpoints.restore_clients(going_on.checkpoint, store)
        log.info("continuing %s after round %d", run_dir, resume_from.round)
    else:
        store.clear()  # a run from round 0: no state left by an earlier attempt
    checkpointing = Checkpointing(Checkpoints(run_dir, cfg.checkpoint_keep), cfg.checkpoint_every,
                                  cfg.num_rounds, store, resume_from)
    summary = record_run(
        run_dir, dcfg, cfg,
        lambda on_round: engine(cfg, on_round, store.root, checkpointing),
        progress=cfg.progress, overrides=overrides,
        resume_round=None if going_on is None else checkpointing.start_round() - 1,
    )
    log.info("results in %s: best accuracy %.4f (round %s), final %.4f (round %s)", run_dir,
             summary["best_accuracy"], summary["best_round"], summary["final_accuracy"],
             summary["final_round"])
    print(f"results: {run_dir}")
    return summary
