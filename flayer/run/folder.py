"""A run folder, opened in one place for the simulation and the deployment paths.

`plan_run` decides, before anything is written, what a command does in its folder: a new run
(refused where the folder holds results), or the continuation of the run there (`resume`),
with every setting checked. `run_plan` then does it: the client state and the checkpoint to
start from, the resolved config and the overrides it was composed from, every round recorded,
the run's own log (run.log, flayer.run.runlog), and a stop before the last round said so (after
the partial results are written).

Continuing a run (`resume`): the run's config is composed again from its saved overrides plus
the new ones, and must equal the saved config but for the keys a continuation may change
(`CONTINUE_KEYS`: `num_rounds` may grow); the rows after the last checkpoint are dropped."""

from __future__ import annotations

import csv
import json
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from flayer.config.compose import compose_dict
from flayer.config.schema import Config, to_config
from flayer.data.sources import DATASETS
from flayer.protocol.catalog import METHODS
from flayer.results.record import RoundRecord
from flayer.results.recorder import RESULT_FILES, RunRecorder, accuracy_text
from flayer.results.setup import run_title
from flayer.run.runlog import note, note_failure, run_log
from flayer.run.stops import held_signals, stopping
from flayer.state.checkpoint import REFUSED, Checkpointing, Checkpoints
from flayer.state.store import ClientStore
from flayer.util.errors import ConfigError, DamagedFile, DataError, reading

CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"  # the overrides the config was composed from
METRICS_FILE, SUMMARY_FILE = "metrics.csv", "summary.json"
# what a continued run may set differently from the saved config: the rounds, and what only
# controls the run's course (progress bar, checkpoints, the pause file), never its numbers
CONTINUE_KEYS = ("num_rounds", "resume", "progress", "checkpoint_every", "checkpoint_keep",
                 "backend.pause_file")

RoundSink = Callable[[RoundRecord], None]
_UNSET = object()
log = logging.getLogger(__name__)


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
        # a share of the pool makes another experiment; the whole pool is the usual one
        **({"dataset_fraction": cfg.dataset.fraction} if cfg.dataset.fraction < 1 else {}),
        "model": cfg.model.name,
        # data that brings its own clients is not split by the partition settings
        **(cfg.partition.summary_fields() if DATASETS.get(cfg.dataset.name).partitioned
           else {"partition": "own"}),
        # a feature shift makes another experiment (none adds nothing: a plain run as before)
        **cfg.shift.summary_fields(),
        "seed": cfg.seed,
        "num_clients": cfg.num_clients,
        "num_rounds": cfg.num_rounds,
        "join_ratio": cfg.join_ratio,
        # clients never trained, evaluated as clients arriving late: another experiment
        **({"new_clients": cfg.new_clients, "new_client_epochs": cfg.new_client_epochs}
           if cfg.new_clients > 0 else {}),
        "batch_size": cfg.batch_size,
        "local_epochs": cfg.local_epochs,
        "lr": cfg.learning_rate,
        **cfg.strategy.summary_fields(),
    }


def record_run(run_dir: Path, dcfg: DictConfig, cfg: Config, play: Callable[[RoundSink], None],
               progress: bool, overrides: Sequence[str] = (),
               resume_round: int | None = None) -> dict[str, Any]:
    """Write config.yaml (and the overrides), let `play` run the rounds into the folder's
    recorder, then write the summary and plot; returns the summary, or raises RunIncomplete
    for a run that stopped early (its rows, summary and plot are written first). With
    `resume_round` the folder's rows up to that round are kept (-1: none)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    recorder = None
    try:
        with held_signals():  # a stop cuts no file short, and finds the recorder to finish
            (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(dcfg, resolve=True))
            (run_dir / OVERRIDES_FILE).write_text(
                OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
            recorder = RunRecorder(
                run_dir, run_info(cfg), cfg.num_rounds, progress=progress,
                train_metrics=METHODS.get(cfg.strategy.name).client.train_metrics,
                keep_rounds=resume_round)
        play(recorder)
    finally:
        if recorder is not None:
            summary = recorder.finish()
            if not summary["complete"]:  # also on the way out of a stop
                signum = stopping()
                note("stopped%s after round %d of %d; partial results here; continue it with "
                     "resume=%s", f" ({signal.Signals(signum).name})" if signum else "",
                     summary["rounds_completed"], cfg.num_rounds, run_dir)
    if not summary["complete"]:
        raise RunIncomplete(
            f"the run stopped after round {summary['rounds_completed']} of {cfg.num_rounds}; "
            f"see the log above. Partial results are in {run_dir}; continue it with "
            f"resume={run_dir}"
        )
    log.info("results in %s: %s", run_dir, accuracy_text(summary))
    return summary


@dataclass
class Continuation:
    """How a run folder goes on: its config (saved, with the allowed changes), the
    overrides to save with it, the checkpoint to start from (None: no round finished, start
    again from round 0) and whether it is already complete."""

    dcfg: DictConfig
    overrides: list[str]
    checkpoint: Path | None
    complete: bool


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def differing_keys(saved: DictConfig, new: DictConfig) -> list[str]:
    """Dotted keys whose resolved values differ, `CONTINUE_KEYS` left out."""
    a = _flat(OmegaConf.to_container(saved, resolve=True))
    b = _flat(OmegaConf.to_container(new, resolve=True))
    return sorted(k for k in set(a) | set(b)
                  if a.get(k, "<unset>") != b.get(k, "<unset>") and k not in CONTINUE_KEYS)


def open_continuation(run_dir: Path, resume: str, overrides: Sequence[str],
                      compose: Callable[[list[str]], DictConfig],
                      fallback: bool = True) -> Continuation | None:
    """How `resume` continues the run in run_dir; None where resume=auto finds no run there.
    ConfigError (exit 2) for a folder that is not a run, or settings that differ;
    DamagedFile for a damaged config, checkpoint or metrics file, before anything is
    written. With `fallback` a damaged newest checkpoint gives way to an older whole one
    (only where the checkpoints hold all of the run's state: not in deployment, where the
    SuperNodes keep theirs)."""
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / OVERRIDES_FILE).is_file():
        if resume == "auto" and not has_results(run_dir):
            return None
        what = ("does not exist" if not run_dir.exists() else
                "is not a flayer run folder (no config.yaml and overrides.yaml)")
        raise ConfigError("resume", resume, f"{run_dir} {what}; give the folder of a run")
    saved = _saved_config(run_dir / CONFIG_FILE)
    saved_overrides = _saved_overrides(run_dir / OVERRIDES_FILE)
    mine = [o for o in overrides if _key(o) != "resume"]
    kept = [o for o in saved_overrides if _key(o) not in {_key(m) for m in mine}]
    allowed = ", ".join(CONTINUE_KEYS[:1] + CONTINUE_KEYS[2:])
    try:
        dcfg = compose([*kept, *mine, f"resume={resume}"])
    except HydraException as exc:  # e.g. another method, whose settings the saved ones miss
        raise ConfigError("resume", resume,
                          f"{' '.join(mine)} does not fit the run in {run_dir} (made with "
                          f"{' '.join(saved_overrides)}): {str(exc).splitlines()[0]}; only "
                          f"{allowed} may change") from None
    changed = differing_keys(saved, dcfg)
    named = {_key(m) for m in mine}
    lacking = [k for k in changed if OmegaConf.select(saved, k, default=_UNSET) is _UNSET
               and not _named(k, named)]
    if lacking:  # a setting newer than the run (or a cut file): the composed value holds
        log.warning("%s lacks the settings %s (written by an older flayer, or cut short); "
                    "they take the values composed from %s", run_dir / CONFIG_FILE,
                    ", ".join(lacking), OVERRIDES_FILE)
        changed = [k for k in changed if k not in lacking]
    if changed:
        shown = "; ".join(f"{k}: {OmegaConf.select(saved, k)} -> {OmegaConf.select(dcfg, k)}"
                          for k in changed)
        unasked = ("" if all(_named(k, named) for k in changed) else
                   f"; {run_dir / CONFIG_FILE} and {OVERRIDES_FILE} disagree where no "
                   "override asked for a change: one of them is damaged or was edited")
        raise ConfigError("resume", resume,
                          f"the run in {run_dir} was made with other settings ({shown}); "
                          f"only {allowed} may change{unasked}")
    checkpoint = Checkpoints(run_dir).usable(fallback)
    done = Checkpoints.load(checkpoint).round if checkpoint is not None else -1
    if dcfg.num_rounds < done:
        raise ConfigError("num_rounds", dcfg.num_rounds,
                          f"must be >= {done}, the rounds the run in {run_dir} has done")
    _check_rows(run_dir / METRICS_FILE, done)
    complete = done == dcfg.num_rounds and _says_complete(run_dir / SUMMARY_FILE)
    return Continuation(dcfg=dcfg, overrides=[*kept, *mine], checkpoint=checkpoint,
                        complete=complete)


def _named(key: str, named: set[str]) -> bool:
    """Whether an override names the key or a group above it."""
    return any(key == n or key.startswith(n + ".") for n in named)


def _saved_config(file: Path) -> DictConfig:
    with reading(file, "a run's config (YAML)", REFUSED, also=(yaml.YAMLError,)):
        saved = OmegaConf.load(file)
    if not isinstance(saved, DictConfig) or "strategy" not in saved:
        raise DamagedFile(file, "does not hold a run's resolved config", REFUSED)
    return saved


def _saved_overrides(file: Path) -> list[str]:
    with reading(file, "a run's overrides (a YAML list)", REFUSED, also=(yaml.YAMLError,)):
        saved = OmegaConf.to_container(OmegaConf.load(file))
    if not isinstance(saved, list) or not all(isinstance(o, str) and
                                              ("=" in o or o.startswith("~")) for o in saved):
        raise DamagedFile(file, "does not hold a list of overrides (key=value)", REFUSED)
    return saved


def _check_rows(file: Path, done: int) -> None:
    """A run continued from round `done`'s checkpoint keeps the rows of rounds 0..done: each
    must be there, once (rows of a later round that did not finish are dropped)."""
    if done < 0:
        return
    with (reading(file, "a run's metrics (CSV)", REFUSED, also=(csv.Error,)),
          open(file, newline="", encoding="utf-8") as f):
        found = [r.get("round") for r in csv.DictReader(f)]
    rounds = [int(r) for r in found if r is not None and r.isdigit() and int(r) <= done]
    missing = sorted(set(range(done + 1)) - set(rounds))
    if missing or len(rounds) != done + 1:
        what = (f"lacks the rows of rounds {_ranges(missing)}" if missing
                else "holds some rounds twice")
        raise DamagedFile(file, f"{what}, which its checkpoint of round {done} has done",
                          REFUSED)


def _ranges(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:5]))
    return shown + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")


def _says_complete(file: Path) -> bool:
    """Whether the summary says the run is complete (an unreadable one is rewritten by the
    continued run, from its rows)."""
    try:
        return bool(json.loads(file.read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


@dataclass
class RunPlan:
    """What a command does in its run folder, decided before anything is written: a new run,
    or the continuation of the run there from its checkpoint (None: no round finished, round
    0 again), or nothing where that run is complete."""

    run_dir: Path
    dcfg: DictConfig
    cfg: Config
    overrides: list[str]
    continued: bool = False
    checkpoint: Path | None = None
    complete: bool = False


def plan_run(dcfg: DictConfig, run_dir: Path, overrides: Sequence[str],
             check: Callable[[Config], None], fallback: bool = True) -> RunPlan:
    """Everything that can fail on bad input, before anything is written: the folder (the one
    `resume=FOLDER` names, else `run_dir`), a continuation's saved settings, checkpoint and
    rows (`open_continuation`; `fallback` as there), and the settings (`check`; a complete
    run is not checked again). ConfigError or DamagedFile otherwise."""
    if dcfg.resume not in (None, "auto"):
        run_dir = Path(str(dcfg.resume)).expanduser()
    going_on = None
    if dcfg.resume is not None:
        going_on = open_continuation(run_dir, str(dcfg.resume), overrides, compose_dict,
                                     fallback)
    if going_on is None:
        cfg = to_config(dcfg)
        check(cfg)
        check_free(run_dir)
        return RunPlan(run_dir, dcfg, cfg, list(overrides))
    cfg = to_config(going_on.dcfg)
    if not going_on.complete:
        check(cfg)
    return RunPlan(run_dir, going_on.dcfg, cfg, going_on.overrides, continued=True,
                   checkpoint=going_on.checkpoint, complete=going_on.complete)


Engine = Callable[[RoundSink, Checkpointing], None]


def saved_summary(run_dir: Path) -> dict[str, Any]:
    """A complete run's summary, as it was written."""
    return json.loads((run_dir / SUMMARY_FILE).read_text())


def run_plan(plan: RunPlan, engine: Engine, store: ClientStore | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Run the plan's rounds with `engine` into its folder and return the summary. With a
    client state store (simulation), the clients start from the checkpoint's state, or from
    none in round 0; without one (deployment) the nodes keep their own."""
    cfg = plan.cfg
    with run_log(plan.run_dir):
        resume_from = Checkpoints.load(plan.checkpoint) if plan.checkpoint is not None else None
        if store is not None:
            if plan.checkpoint is not None:
                Checkpoints.restore_clients(plan.checkpoint, store)
            else:
                store.clear()  # a run from round 0: no state left by an earlier attempt
        if resume_from is not None:
            log.info("continuing %s after round %d", plan.run_dir, resume_from.round)
        else:
            note("%s %s in %s", "starting again (no round was checkpointed):" if plan.continued
                 else "starting", run_title(run_info(cfg)), plan.run_dir)
        checkpointing = Checkpointing(Checkpoints(plan.run_dir, cfg.checkpoint_keep),
                                      cfg.checkpoint_every, cfg.num_rounds, store, resume_from)
        try:
            return record_run(plan.run_dir, plan.dcfg, cfg,
                              lambda on_round: engine(on_round, checkpointing),
                              progress=progress, overrides=plan.overrides,
                              resume_round=(checkpointing.start_round() - 1 if plan.continued
                                            else None))
        except (DataError, RunIncomplete):
            raise  # said in one line by the caller
        except Exception:  # a bug, or the machinery failing: its traceback, for the record
            note_failure("the run failed")
            raise
