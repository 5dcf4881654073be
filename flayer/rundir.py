"""A run folder, opened in one place for the simulation and the deployment paths: refuse a
folder that holds results, write the resolved config, record every round, and say so when a
run stops before its last round (after its partial results are written)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from flayer.catalog import METHODS
from flayer.config import Config
from flayer.errors import ConfigError
from flayer.results.record import RoundRecord
from flayer.results.recorder import RESULT_FILES, RunRecorder

RoundSink = Callable[[RoundRecord], None]


class RunIncomplete(RuntimeError):
    """The run stopped before its last round; its partial results are in the folder."""


def has_results(run_dir: Path) -> list[str]:
    return [name for name in RESULT_FILES if (run_dir / name).exists()]


def check_free(run_dir: Path, setting: str = "hydra.run.dir") -> None:
    """ConfigError unless the folder holds no results (nothing is ever overwritten)."""
    found = has_results(run_dir)
    if found:
        raise ConfigError(setting, str(run_dir),
                          f"already holds results ({', '.join(found)}); choose another directory")


def run_info(cfg: Config) -> dict[str, Any]:
    """The identifying settings a summary and the report show."""
    return {
        "method": cfg.strategy.name,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        **cfg.partition.summary_fields(),
        "seed": cfg.seed,
        "num_clients": cfg.num_clients,
        "num_rounds": cfg.num_rounds,
        "join_ratio": cfg.join_ratio,
        "batch_size": cfg.batch_size,
        "local_epochs": cfg.local_epochs,
        "lr": cfg.learning_rate,
        **cfg.strategy.summary_fields(),
    }


def record_run(run_dir: Path, dcfg: DictConfig, cfg: Config, play: Callable[[RoundSink], None],
               progress: bool) -> dict[str, Any]:
    """Write config.yaml, let `play` run the rounds into the folder's recorder, then write the
    summary and plot; returns the summary, or raises RunIncomplete for a run that stopped
    early (its rows, summary and plot are written first)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(dcfg, resolve=True))
    recorder = RunRecorder(run_dir, run_info(cfg), cfg.num_rounds, progress=progress,
                           train_metrics=METHODS.get(cfg.strategy.name).client.train_metrics)
    try:
        play(recorder)
    finally:
        summary = recorder.finish()
    if not summary["complete"]:
        raise RunIncomplete(
            f"the run stopped after round {summary['rounds_completed']} of {cfg.num_rounds}; "
            f"see the log above. Partial results are in {run_dir}"
        )
    return summary
