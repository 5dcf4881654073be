"""One simulated experiment from a composed config: check it, then run it into its folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from flayer.config import Config, to_config
from flayer.rundir import check_free, record_run
from flayer.simulation import run_apps
from flayer.state.store import ClientStore, store_root
from flayer.validation import validate

log = logging.getLogger(__name__)


def prepare(dcfg: DictConfig, run_dir: Path) -> Config:
    """Everything that can fail on bad input, before anything is written."""
    cfg = to_config(dcfg)
    validate(cfg)
    check_free(run_dir)
    return cfg


def run(dcfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    cfg = prepare(dcfg, run_dir)
    store = ClientStore(store_root(run_dir, cfg.backend.state_dir))
    store.clear()  # a fresh run: no state left by an earlier attempt in this folder
    summary = record_run(run_dir, dcfg, cfg,
                         lambda on_round: run_apps(cfg, on_round, store.root),
                         progress=cfg.progress)
    log.info("results in %s: best accuracy %.4f (round %s), final %.4f (round %s)", run_dir,
             summary["best_accuracy"], summary["best_round"], summary["final_accuracy"],
             summary["final_round"])
    print(f"results: {run_dir}")
    return summary
