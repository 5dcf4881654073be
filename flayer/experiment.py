"""One experiment from a composed config: check it, claim the run directory, simulate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from flayer.config import Config, to_config
from flayer.errors import ConfigError
from flayer.results.recorder import has_results
from flayer.validation import validate

log = logging.getLogger(__name__)


def run_info(cfg: Config) -> dict[str, Any]:
    """The identifying settings a summary and the report show."""
    info: dict[str, Any] = {
        "method": cfg.strategy.name,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "partition": cfg.partition.name,
        "alpha": cfg.partition.alpha,
        "seed": cfg.seed,
        "num_clients": cfg.num_clients,
        "num_rounds": cfg.num_rounds,
        "join_ratio": cfg.join_ratio,
        "batch_size": cfg.batch_size,
        "local_epochs": cfg.local_epochs,
        "lr": cfg.learning_rate,
    }
    accuracy_source = getattr(cfg.strategy, "accuracy_source", None)
    if accuracy_source is not None:
        info["accuracy_source"] = accuracy_source
    return info


def check_run_dir(run_dir: Path) -> None:
    found = has_results(run_dir)
    if found:
        raise ConfigError(
            "hydra.run.dir", str(run_dir),
            f"already holds results ({', '.join(found)}); choose another directory",
        )


def prepare(dcfg: DictConfig, run_dir: Path) -> Config:
    """Everything that can fail on bad input, before anything is written."""
    cfg = to_config(dcfg)
    validate(cfg)
    check_run_dir(run_dir)
    return cfg


def run(dcfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    cfg = prepare(dcfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(dcfg, resolve=True))
    from flayer.simulation import simulate

    summary = simulate(cfg, run_dir, run_info(cfg))
    log.info("results in %s: best accuracy %.4f (round %s), final %.4f (round %s)", run_dir,
             summary["best_accuracy"], summary["best_round"], summary["final_accuracy"],
             summary["final_round"])
    print(f"results: {run_dir}")
    return summary
