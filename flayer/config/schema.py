"""Typed configuration: the schema Hydra checks every composed config against."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING, DictConfig, OmegaConf

from flayer.util.errors import require

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


def within(value: Any, bounds: str) -> bool:
    """Whether value is a finite number within `bounds`: "> a", ">= a", or an interval
    "(a, b)", "(a, b]", "[a, b)", "[a, b]"."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if bounds[0] in "([":
        low, high = (float(x) for x in bounds[1:-1].split(","))
        above = low < value if bounds[0] == "(" else low <= value
        return above and (value < high if bounds[-1] == ")" else value <= high)
    op, limit = bounds.split()
    if op not in (">", ">="):
        raise ValueError(f"bounds {bounds!r}: not > a, >= a or an interval")
    return value > float(limit) if op == ">" else value >= float(limit)


@dataclass
class MethodSettings:
    """Base of every method's settings; each method subclasses it with its own fields."""

    name: str = MISSING

    def check(self, cfg: Config, layers: LayerMap) -> None:
        """Raise ConfigError for a bad method setting (the model's layers are known here)."""

    def require(self, ok: bool, key: str, value: Any, allowed: str) -> None:
        """ConfigError naming `strategy.<key>` unless ok: one line per rule in `check`."""
        require(ok, f"strategy.{key}", value, allowed)

    def require_number(self, key: str, bounds: str, *, null: str | None = None,
                       note: str = "") -> None:
        """ConfigError naming `strategy.<key>` unless the setting is a finite number within
        `bounds` ("> 0", ">= 0" or an interval such as "(0, 1]"), or null where `null` says
        what null stands for; `note` follows the rule in the message."""
        value = getattr(self, key)
        rule = f"in {bounds}" if bounds[0] in "([" else f"a finite number {bounds}"
        if null is not None:
            rule = f"null ({null}) or {rule}"
        self.require((null is not None and value is None) or within(value, bounds), key, value,
                     f"must be {rule}" + (f" ({note})" if note else ""))

    def summary_fields(self) -> dict[str, Any]:
        """Settings of this method that a run's summary.json shows next to the run-wide ones
        (those that change what its accuracy means)."""
        return {}


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
    # Share of the pool the clients are cut from, in (0, 1]: a seeded random subset, for small
    # trials (1 = the whole pool). Only for datasets that are split over the clients.
    fraction: float = 1.0


@dataclass
class ModelConfig:
    """A model and its reference learning rate for the paper's setups (a method's own
    per-model values live with the method)."""

    name: str = MISSING
    lr: float = MISSING  # reference learning rate for this model (its yaml gives it)


@dataclass
class PartitionConfig:
    """Base of every partitioner's settings: the fields all schemes share. Each scheme
    subclasses it with its own fields and rules in flayer/data/partitioners/<name>.py."""

    name: str = MISSING
    # Smallest client; null = int(min(40, pool / (2 * num_clients))).
    min_partition_size: int | None = None
    train_fraction: float = 0.75  # per-client train share; the rest is the client's test data

    def least_size(self, pool: int, num_clients: int) -> int:
        """The smallest client a split may give: the setting, else PFLlib's default, so that
        default runs match the reference's splits."""
        if self.min_partition_size is not None:
            return self.min_partition_size
        return int(min(40, pool / (2 * num_clients)))

    def check_settings(self, cfg: Config) -> None:
        """Raise ConfigError for a setting that is bad whatever the data (checked before any
        data or torch is loaded). A scheme checks its own fields first, then calls this."""
        require(0 < self.train_fraction < 1, "partition.train_fraction", self.train_fraction,
                "must be in (0, 1)")
        require(self.min_partition_size is None or self.min_partition_size >= 2,
                "partition.min_partition_size", self.min_partition_size,
                "must be >= 2 (a client needs a train and a test sample) or null")

    def check(self, cfg: Config, pool: int, dataset: str, classes: int | None) -> None:
        """Raise ConfigError for a bad setting: `check_settings`, then the rules that need the
        pool's size (known before any decoding). A scheme with rules that need the data
        checks them first, then calls this."""
        self.check_settings(cfg)
        most = pool // 2
        require(cfg.num_clients <= most, "num_clients", cfg.num_clients,
                f"{dataset} has {pool} samples: at most {most} clients "
                "(each needs a train and a test sample)")
        size = self.least_size(pool, cfg.num_clients)
        require(max(size, 2) * cfg.num_clients <= pool, "partition.min_partition_size", size,
                f"{cfg.num_clients} clients x {size} samples exceed the {pool} samples of "
                f"{dataset}")

    def split_column(self, dataset: str, offered: tuple[str, ...]) -> str | None:
        """What the scheme's split function receives first: None for the labels (every label
        scheme), else the name of the client column whose values it splits by, one of those
        the dataset `offered`; a scheme that needs one it lacks raises ConfigError here,
        before any data is read."""
        return None

    def summary_fields(self) -> dict[str, Any]:
        """What identifies the split in a run's summary.json: the scheme, plus the settings
        that change what its accuracy means (a scheme adds its own)."""
        return {"partition": self.name}


@dataclass
class ShiftConfig:
    """Base of every feature shift's settings: how a client's inputs are changed on top of
    its split (the same for its train and test samples: the client's own distribution). Each
    shift subclasses it with its own fields and rules in flayer/data/shifts/<name>.py."""

    name: str = MISSING
    # Whether the shift changes images (and so cannot apply to token ids); `none` changes
    # nothing.
    images_only = True

    def check_settings(self, cfg: Config) -> None:
        """Raise ConfigError for a setting that is bad whatever the data (checked before any
        data or torch is loaded)."""

    def check_samples(self, dataset: str, tokens: bool | None) -> None:
        """ConfigError where the samples are token ids (`tokens`; None: not known yet) and
        the shift changes images."""
        require(not (tokens and self.images_only), "shift", self.name,
                f"changes images, and dataset={dataset} holds token ids; use shift=none "
                f"with dataset={dataset}, or an image dataset with shift={self.name}")

    def summary_fields(self) -> dict[str, Any]:
        """What identifies the shift in a run's summary.json (nothing where there is none, so
        that a plain run's summary reads as before)."""
        return {"shift": self.name}


@dataclass
class BackendConfig:
    name: str = MISSING
    client_cpus: float = 1.0  # CPUs per client actor
    client_gpus: float | None = None  # GPU share per client actor; null = 0.25 with CUDA, else 0
    num_cpus: int | None = None  # CPUs Ray may use; null = all
    # Simulation: a running Ray cluster to attach to ("auto" or the head's "host:port");
    # null = a private Ray instance of this run's own, whatever else runs on the machine
    address: str | None = None
    # Simulation: executor nodes serving all clients (null = as many as Ray runs at once)
    executors: int | None = None
    # Simulation: where the client state store goes (null = the run folder's `state`)
    state_dir: str | None = None
    round_timeout: float = 3600.0  # seconds to wait for the replies of one message round
    # Deployment: the run starts once num_clients nodes are connected, or after node_wait
    # seconds with at least min_nodes (null = num_clients); a lost node is waited for up to
    # node_wait seconds once. While pause_file exists the server holds before the next round
    # (before round r, if the file holds the number r).
    min_nodes: int | None = None
    node_wait: float = 300.0
    pause_file: str | None = None


@dataclass
class DeployBackendConfig(BackendConfig):
    """Flower's deployment engine: real machines answer slower, and a run goes on with the
    SuperNodes it has."""

    round_timeout: float = 600.0
    min_nodes: int | None = 1


@dataclass
class Config:
    strategy: MethodSettings = MISSING
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    partition: PartitionConfig = MISSING
    shift: ShiftConfig = MISSING
    backend: BackendConfig = MISSING
    num_rounds: int = 20
    num_clients: int = 20
    join_ratio: float = 1.0
    eval_every: int = 1
    # share of the clients evaluated in an evaluated round between the first and the last
    # (a seeded sample; rounds 0 and num_rounds evaluate every client)
    eval_fraction: float = 1.0
    # clients kept out of every training round (a sample seeded by the run seed): in each
    # evaluated round each takes in the global model, is personalized as its method
    # personalizes a client that arrives late for new_client_epochs local epochs (0: none),
    # is evaluated, and keeps nothing (docs/new-clients.md)
    new_clients: int = 0
    new_client_epochs: int = 1
    seed: int = 0
    batch_size: int = 10
    local_epochs: int = 1
    lr: float | None = None  # null = the model's reference lr
    device: str = "auto"  # auto | cpu | cuda
    cache_dir: str = "~/.cache/flayer"
    progress: bool = True
    # null: a new run; a run folder: continue it from its last checkpoint; auto: continue
    # the run in this run's folder if it has one (sweeps), else start it
    resume: str | None = None
    checkpoint_every: int = 1  # rounds between checkpoints (the last round always has one)
    checkpoint_keep: int = 1  # checkpoints kept in the run folder (the newest ones)

    @property
    def learning_rate(self) -> float:
        return self.model.lr if self.lr is None else self.lr


def to_config(cfg: DictConfig) -> Config:
    """The composed Hydra config as typed dataclasses (resolves interpolations)."""
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, Config), type(obj)
    return obj
