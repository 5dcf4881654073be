"""run.py's command line, composed before Hydra runs it: an unknown option or setting, a value
of the wrong type or an override Hydra cannot read ends in one line (exit 2) that says what
is wrong and the nearest names, instead of Hydra's own multi-line report (exit 1).

Only composition is checked here, for every job a sweep names; the values are checked by the
callbacks in flayer.config.hydra_checks, before any run folder is made."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from flayer.config.schema import Config, to_config
from flayer.config.store import register_schemas
from flayer.config.unknown import SettingError, unknown_option, unknown_setting
from flayer.util.errors import ConfigError

CONFIG_NAME = "config"


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """Every job's override list, as Hydra's basic sweeper runs them: the cartesian product
    of the swept values, in command-line order."""
    choices = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.get_key_element()
        values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        choices.append([f"{key}={value}" for value in values])
    return [list(job) for job in itertools.product(*choices)]


def compose_job(overrides: Sequence[str], config_name: str = CONFIG_NAME) -> DictConfig:
    """conf/ composed with one job's overrides (Hydra initialized), or ConfigError in one line
    naming what Hydra refused."""
    try:
        return compose(config_name=config_name, overrides=list(overrides))
    except HydraException as exc:
        raise _explained(exc, list(overrides), config_name) from None


def _explained(exc: HydraException, overrides: list[str], config_name: str) -> ConfigError:
    cause = exc.__cause__
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        return unknown_option(group, option, sorted(exc.options))
    if (isinstance(cause, ConfigKeyError | ConfigAttributeError) and cause.full_key
            and not str(cause.full_key).startswith("hydra.")):
        key, value = _override_of(str(cause.full_key), overrides)
        base = _chosen_options(overrides, config_name)
        if base is not None:
            return unknown_setting(key, value, typed(base))
    if isinstance(cause, ValidationError) and cause.full_key:
        key, value = _override_of(str(cause.full_key), overrides)
        return ConfigError(key, value, str(cause.msg).splitlines()[0])
    text = ""
    for line in filter(None, (line.strip() for line in str(exc).splitlines())):
        text += line if not text else (" " if text.endswith((".", ":")) else "; ") + line
    return SettingError("overrides", " ".join(overrides),
                        f"cannot compose the config from the command line: {text}")


def typed(dcfg: DictConfig) -> Config:
    """The composed config as typed dataclasses, or ConfigError in one line where it cannot
    be (a required setting deleted with `~`, an interpolation that does not resolve)."""
    try:
        return to_config(dcfg)
    except OmegaConfBaseException as exc:
        key = str(getattr(exc, "full_key", "") or "the config")
        message = str(getattr(exc, "msg", exc)).splitlines()[0]
        raise SettingError(key, None, f"bad setting {key}: {message}") from None


def _override_of(full_key: str, overrides: list[str]) -> tuple[str, str]:
    """The override (key, value) that set `full_key` or a key below it (the last one)."""
    for line in reversed(overrides):
        key, _, value = line.partition("=")
        key = key.lstrip("+~")
        if key == full_key or key.startswith(full_key + "."):
            return key, value
    return full_key, ""


def _chosen_options(overrides: list[str], config_name: str) -> DictConfig | None:
    """conf/ composed with the command line's choices of group options alone: where a
    setting goes astray, the settings it could have meant."""
    loader = GlobalHydra.instance().config_loader()
    chosen = [o.input_line for o in OverridesParser.create().parse_overrides(overrides)
              if o.input_line and loader.get_group_options(o.key_or_group)]
    try:
        return compose(config_name=config_name, overrides=chosen)
    except HydraException:
        return None


def check_command_line(argv: Sequence[str], conf_dir: Path,
                       config_name: str = CONFIG_NAME) -> None:
    """Before Hydra runs `argv`: every job it names must compose, else one line on stderr and
    exit 2. Left to Hydra: a command line without overrides, one that names other config
    folders, and shell completion."""
    args = get_args_parser().parse_args(list(argv))
    if (not args.overrides or args.config_path or args.config_dir or args.shell_completion
            or args.experimental_rerun):
        return
    overrides: list[str] = list(args.overrides)
    multirun = args.multirun or "hydra.mode=MULTIRUN" in overrides
    config_name = args.config_name or config_name
    register_schemas()
    with initialize_config_dir(str(conf_dir.resolve()), version_base="1.3"):
        try:
            jobs = expand_sweep(overrides) if multirun else [overrides]
        except HydraException as exc:  # the sweep's overrides themselves cannot be read
            fail(_explained(exc, overrides, config_name))
        for job in jobs:
            try:
                compose_job(job, config_name)
            except ConfigError as exc:
                fail(exc, job if multirun else None)


def fail(exc: Exception, job: Sequence[str] | None = None, then: str = "") -> NoReturn:
    """One line on stderr and exit 2 (naming the job of a sweep that failed)."""
    where = f" (job with {' '.join(job)})" if job else ""
    print(f"error: {exc}{where}{then}", file=sys.stderr)
    sys.exit(2)
