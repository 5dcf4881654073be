"""Puts every typed schema in Hydra's ConfigStore, so that conf/'s yamls are checked against
them: the run-wide config, and each group option's settings class (methods and partitioners
bring their own)."""

from __future__ import annotations

import functools

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from flayer.catalog import METHODS
from flayer.config import BackendConfig, Config, DatasetConfig, DeployBackendConfig, ModelConfig
from flayer.data.partitioners import partition_schemas


def run_folder(resume: str | None, new: str) -> str:
    """hydra.run.dir: the folder named by `resume`, else a new one (`resume=auto` continues
    whatever folder the run is given)."""
    return new if resume in (None, "", "auto") else resume


@functools.lru_cache(maxsize=1)
def register_schemas() -> None:
    """Once per process: store every schema under its group (`<option>_schema`), and the
    resolver that makes `resume=RUN_DIR` the run's folder."""
    OmegaConf.register_new_resolver("run_folder", run_folder, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="backend", name="backend_schema", node=BackendConfig)
    cs.store(group="backend", name="deploy_schema", node=DeployBackendConfig)
    for name, schema in partition_schemas().items():
        cs.store(group="partition", name=name, node=schema)
    for name in METHODS:
        cs.store(group="strategy", name=f"{name}_schema", node=METHODS.get(name).config)
