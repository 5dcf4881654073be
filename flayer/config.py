"""Typed configuration: the schema Hydra checks every composed config against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from omegaconf import MISSING, DictConfig, OmegaConf

if TYPE_CHECKING:
    from flayer.layers import LayerMap


@dataclass
class StrategyConfig:
    """Base of every method's settings; each method subclasses it with its own fields."""

    name: str = MISSING

    def check(self, cfg: Config, layers: LayerMap) -> None:
        """Raise ConfigError for a bad method setting (the model's layers are known here)."""


@dataclass
class DatasetConfig:
    name: str = MISSING
    # Where the data lives (a folder); null = the dataset's default location.
    path: str | None = None
    # Text sets: tokens per sample; longer texts are cut, shorter ones padded with 0.
    max_len: int = 200
    # Text sets: vocabulary file (one token per line, line k = id k; lines 0 and 1 are <pad>
    # and <unk>); null = build it from the clients' training texts. Give every client the same
    # file where clients hold their own data.
    vocab: str | None = None


@dataclass
class ModelConfig:
    """A model and its reference values for the paper's setups."""

    name: str = MISSING
    lr: float = 0.005  # reference learning rate for this model
    P: int = 2  # FLAYER: number of top parameter tensors mixed and trained by the head pass
    s: float | None = None  # FLAYER: rate scale; null = number of layers - 1
    c: float = 1.0  # FLAYER: rate multiplier
    head_rate: float = 0.2  # FLAYER: head learning rate as a fraction of lr
    # FLAYER with reference_quirks: the reference's starting rates, as multiples of lr
    quirk_rates: list[float] | None = None


@dataclass
class PartitionConfig:
    name: str = MISSING
    alpha: float = 0.1  # Dirichlet concentration
    # Smallest client; null = int(min(40, pool / (2 * num_clients))).
    min_partition_size: int | None = None
    train_fraction: float = 0.75  # per-client train share; the rest is the client's test data
    # Pathological: the number of classes each client holds, and how they are picked:
    # "first-deterministic" (with C classes: client k gets class k mod C plus random others, as
    # in Li et al., "Federated Learning on Non-IID Data Silos"), "deterministic" (classes k,
    # k+1, ... mod C) or "random" (any classes, drawn with the run seed).
    classes_per_client: int = 2
    class_assignment: str = "first-deterministic"


@dataclass
class BackendConfig:
    name: str = MISSING
    client_cpus: float = 1.0  # CPUs per client actor
    client_gpus: float | None = None  # GPU share per client actor; null = 0.25 with CUDA, else 0
    num_cpus: int | None = None  # CPUs Ray may use; null = all
    round_timeout: float = 3600.0  # seconds to wait for the replies of one message round
    # Deployment: the run starts once num_clients nodes are connected, or after node_wait
    # seconds with at least min_nodes (null = num_clients); a lost node is waited for up to
    # node_wait seconds once. While pause_file exists the server holds before the next round
    # (before round r, if the file holds the number r).
    min_nodes: int | None = None
    node_wait: float = 300.0
    pause_file: str | None = None


@dataclass
class Config:
    strategy: StrategyConfig = MISSING
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    partition: PartitionConfig = MISSING
    backend: BackendConfig = MISSING
    num_rounds: int = 20
    num_clients: int = 20
    join_ratio: float = 1.0
    eval_every: int = 1
    seed: int = 0
    batch_size: int = 10
    local_epochs: int = 1
    lr: float | None = None  # null = the model's reference lr
    device: str = "auto"  # auto | cpu | cuda
    cache_dir: str = "~/.cache/flayer"
    progress: bool = True

    @property
    def learning_rate(self) -> float:
        return self.model.lr if self.lr is None else self.lr


def register_schemas() -> None:
    """Put the schemas in Hydra's ConfigStore (each method adds its own on import)."""
    from hydra.core.config_store import ConfigStore

    from flayer.catalog import METHODS

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="partition", name="partition_schema", node=PartitionConfig)
    cs.store(group="backend", name="backend_schema", node=BackendConfig)
    for name in METHODS:
        cs.store(group="strategy", name=f"{name}_schema", node=METHODS.get(name).config)


def to_config(cfg: DictConfig) -> Config:
    """The composed Hydra config as typed dataclasses (resolves interpolations)."""
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, Config), type(obj)
    return obj
