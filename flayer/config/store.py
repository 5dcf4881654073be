"""Puts every typed schema in Hydra's ConfigStore, so that conf/'s yamls are checked against
them: the run-wide config, and each group option's settings class (methods, partitioners and
shifts bring their own).

Schemas are stored at the top level as `<group>_<option>_schema`, never inside a group: Hydra
offers every entry of a group as an option of it, and a schema is no option. An option's yaml
names its schema first in its defaults (`- /strategy_fedavg_schema`), which types the option's
node. Nothing here imports torch, Flower or a data library, so that Hydra answers --help, and
a config is composed and checked, before any of them is loaded."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from types import ModuleType

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from flayer.config.schema import (
    BackendConfig,
    Config,
    DatasetConfig,
    DeployBackendConfig,
    MethodSettings,
    ModelConfig,
)
from flayer.data.partitioners import PARTITIONERS
from flayer.data.shifts import SHIFTS

# where the methods' settings live: FLAYER's module, and one module per comparison method
SETTINGS_MODULE = "flayer.algorithm.settings"
SETTINGS_PACKAGE = "baselines.settings"


def schema_name(group: str, option: str | None = None) -> str:
    """The ConfigStore name of a group option's schema (of the whole group's, without one)."""
    return f"{group}_{option}_schema" if option else f"{group}_schema"


def _settings_modules() -> list[ModuleType]:
    package = importlib.import_module(SETTINGS_PACKAGE)
    return [importlib.import_module(SETTINGS_MODULE),
            *(importlib.import_module(f"{SETTINGS_PACKAGE}.{m.name}")
              for m in pkgutil.iter_modules(package.__path__))]


@functools.lru_cache(maxsize=1)
def method_settings() -> dict[str, type[MethodSettings]]:
    """Every method's settings class by method name: each MethodSettings subclass that a
    settings module defines, under the name it defaults to. The methods themselves (torch,
    Flower) are not imported; flayer.protocol.catalog registers them with these same classes."""
    found: dict[str, type[MethodSettings]] = {}
    for module in _settings_modules():
        for obj in vars(module).values():
            if not (isinstance(obj, type) and issubclass(obj, MethodSettings)
                    and obj.__module__ == module.__name__):
                continue
            name = getattr(obj, "name", MISSING)
            if not isinstance(name, str) or name == MISSING:
                raise ValueError(f"{module.__name__}.{obj.__name__} needs a default name "
                                 "(its method's name)")
            if name in found:
                raise ValueError(f"the settings of method {name!r} are defined twice "
                                 f"({found[name].__module__}, {module.__name__})")
            found[name] = obj
    return dict(sorted(found.items()))


def option_schemas() -> dict[str, type]:
    """Every schema by its ConfigStore name."""
    return {
        "config_schema": Config,
        schema_name("dataset"): DatasetConfig,
        schema_name("model"): ModelConfig,
        schema_name("backend"): BackendConfig,
        schema_name("backend", "deploy"): DeployBackendConfig,
        **{schema_name("partition", n): PARTITIONERS.get(n).settings for n in PARTITIONERS},
        **{schema_name("shift", n): SHIFTS.get(n).settings for n in SHIFTS},
        **{schema_name("strategy", n): s for n, s in method_settings().items()},
    }


def run_folder(resume: str | None, new: str) -> str:
    """hydra.run.dir: the folder named by `resume`, else a new one (`resume=auto` continues
    whatever folder the run is given)."""
    return new if resume in (None, "", "auto") else resume


@functools.lru_cache(maxsize=1)
def register_schemas() -> None:
    """Once per process: store every schema, and the resolver that makes `resume=RUN_DIR` the
    run's folder."""
    OmegaConf.register_new_resolver("run_folder", run_folder, replace=True)
    cs = ConfigStore.instance()
    for name, node in option_schemas().items():
        cs.store(name=name, node=node)
