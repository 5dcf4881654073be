"""Hydra callback: check a run's settings, or every job's of a multirun, before Hydra makes any
run folder or log file, so that a refused command leaves nothing behind and a bad value in
job 7 does not surface after six finished simulations.

The checks that need neither data nor model come first, before torch and Flower are imported
(a bad value is refused at once); then the full checks and the run folder's."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from flayer.config.checks import check_settings
from flayer.config.command_line import compose_job, expand_sweep, fail, typed
from flayer.util.errors import ConfigError, DataError


class CheckBeforeStart(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        job = _job_config(config)
        try:
            check_settings(typed(job))
            _check_run(job, Path(str(config.hydra.run.dir)), list(config.hydra.overrides.task))
        except (ConfigError, DataError) as exc:
            fail(exc)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        task = list(config.hydra.overrides.task)
        continuing = "resume=auto" in task  # finished jobs are skipped, stopped ones go on
        if any(o.startswith("resume=") for o in task) and not continuing:
            fail(ConfigError("resume", task[[o.startswith("resume=") for o in task].index(True)],
                             "a sweep continues with resume=auto (each job its own folder)"),
                 then="; no job was started")
        jobs = expand_sweep(task)
        configs = []
        for job in jobs:
            try:
                cfg = typed(compose_job(job))
                check_settings(cfg)
            except (ConfigError, DataError) as exc:
                fail(exc, job, "; no job was started")
            configs.append(cfg)
        from flayer.config.validation import validate
        from flayer.run.folder import has_results  # torch and Flower: once the quick checks passed

        if (not continuing and sweep_dir.is_dir()
                and any(has_results(p) for p in sweep_dir.iterdir() if p.is_dir())):
            fail(ConfigError("hydra.sweep.dir", str(sweep_dir),
                             "already holds results; choose another directory, or continue "
                             "its jobs with resume=auto"), then="; no job was started")
        for job, cfg in zip(jobs, configs, strict=True):
            try:
                validate(cfg)
            except (ConfigError, DataError) as exc:
                fail(exc, job, "; no job was started")


def _job_config(config: DictConfig) -> DictConfig:
    """The run's config without Hydra's node, as the task function receives it."""
    job = copy.deepcopy(config)
    with read_write(job), open_dict(job):
        del job["hydra"]
    return job


def _check_run(job: DictConfig, new_dir: Path, overrides: list[str]) -> None:
    """What flayer.run.experiment.run refuses before it writes anything: a folder to continue
    that is no run of these settings, a bad setting, a folder that already holds results.
    Imports torch and Flower (the quick checks have passed)."""
    from flayer.run.experiment import plan

    plan(job, new_dir, overrides)
