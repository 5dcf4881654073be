"""Hydra callback: in a multirun, compose and check every job's settings before the first
job starts, so a bad value in job 7 does not surface after six finished simulations."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from flayer.errors import ConfigError, DataError
from flayer.rundir import has_results


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """Every job's override list, as Hydra's basic sweeper runs them: the cartesian product
    of the swept values, in command-line order."""
    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        choices.append([f"{key}={value}" for value in values])
    return [list(job) for job in itertools.product(*choices)]


class CheckEveryJob(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from flayer.config import to_config
        from flayer.validation import validate

        sweep_dir = Path(str(config.hydra.sweep.dir))
        task = list(config.hydra.overrides.task)
        continuing = "resume=auto" in task  # finished jobs are skipped, stopped ones go on
        if any(o.startswith("resume=") for o in task) and not continuing:
            _fail(ConfigError("resume", task[[o.startswith("resume=") for o in task].index(True)],
                              "a sweep continues with resume=auto (each job its own folder)"),
                  [])
        if (not continuing and sweep_dir.is_dir()
                and any(has_results(p) for p in sweep_dir.iterdir() if p.is_dir())):
            _fail(ConfigError("hydra.sweep.dir", str(sweep_dir),
                              "already holds results; choose another directory, or continue "
                              "its jobs with resume=auto"), [])
        for job in expand_sweep(task):
            try:
                validate(to_config(compose(config_name="config", overrides=job)))
            except (ConfigError, DataError) as exc:
                _fail(exc, job)


def _fail(exc: Exception, job: list[str]) -> None:
    where = f" (job with {' '.join(job)})" if job else ""
    print(f"error: {exc}{where}; no job was started", file=sys.stderr)
    sys.exit(2)
