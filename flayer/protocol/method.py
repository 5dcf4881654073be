"""The client-side contract every method implements, and the method registry.

A method is three things registered under one name: its settings (a StrategyConfig
subclass), its client side (a ClientMethod subclass) and its server strategy (a PflStrategy
subclass). The ClientApp and ServerApp know only this contract.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flayer.config.schema import Config, StrategyConfig
from flayer.data.federated import ClientData
from flayer.data.source import DataSpec
from flayer.nn.layers import LayerMap
from flayer.nn.models import MODELS
from flayer.nn.training import EvalResult, evaluate, train
from flayer.protocol.upload import Upload
from flayer.util.registry import Registry
from flayer.util.seeding import derive_seed, torch_generator

Meta = dict[str, Any]  # ConfigRecord-compatible scalars and lists


def build_model(cfg: Config, spec: DataSpec) -> nn.Module:
    """The run's initial model; identical on the server and on every client."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "model-init"))
        return MODELS.get(cfg.model.name)(spec)


def shared_params(model: nn.Module, names: Collection[str] | None = None
                  ) -> dict[str, np.ndarray]:
    """The model's parameters as arrays, or only the named ones (BatchNorm statistics are
    buffers: never shared)."""
    return {n: p.detach().cpu().numpy().copy() for n, p in model.named_parameters()
            if names is None or n in names}


def load_params(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in arrays.items():
            params[name].copy_(torch.as_tensor(value))


def load_part(model: nn.Module, arrays: dict[str, np.ndarray], names: Collection[str],
              part: str) -> None:
    """Load global arrays that must be exactly the named part of the model (for methods whose
    server holds a part only): anything else arriving would overwrite what the client keeps,
    a bug worth stopping for."""
    if set(arrays) != set(names):
        raise ValueError(f"global arrays {sorted(arrays)} are not the {part} {sorted(names)}")
    load_params(model, arrays)


@dataclass
class ClientEnv:
    """Everything a method's client side may use for one message."""

    cfg: Config
    settings: StrategyConfig  # the method's own settings
    partition_id: int
    data: ClientData
    layers: LayerMap
    device: torch.device
    # the message's instructions (server round, model version, method-specific keys)
    instructions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FitResult:
    upload: Upload
    num_examples: int
    train_loss: float
    metrics: dict[str, float] | None = None


class ClientMethod:
    """A method's client side. One instance serves one client for one message: the app hands
    it a model in its initial state, restores what the method keeps (`kept`, `extra`,
    `meta`), calls `receive` when a new global model version arrives (else `reload`), then
    `fit` or `evaluate`, and stores `state()` back. `meta` and `extra` belong to the method
    alone (the app keeps its own bookkeeping apart). Subclasses override only what their
    method changes.
    """

    #: names of the extra train metrics every fit reports (FitResult.metrics), beyond
    #: train-loss; the run's metrics.csv gets one column for each (sample-weighted mean)
    train_metrics: ClassVar[tuple[str, ...]] = ()

    #: fraction of the training data held out for validation (FLAYER's accuracy_source=val)
    @classmethod
    def holdout_fraction(cls, settings: StrategyConfig) -> float:
        return 0.0

    def __init__(self, env: ClientEnv, model: nn.Module) -> None:
        self.env = env
        self.cfg = env.cfg
        self.settings = env.settings
        self.model = model.to(env.device)
        self.meta: Meta = {}
        self.extra: dict[str, np.ndarray] = {}

    # ---- personal state ------------------------------------------------------------------
    def kept(self) -> set[str]:
        """Names in `self.model.state_dict()` this method keeps across rounds; every other
        part of the model is set up from the global model each time (`receive`, `reload`).
        By default the whole model: a method keeps less by saying so."""
        return set(self.model.state_dict())

    def buffers(self) -> set[str]:
        """The model's stored buffers (BatchNorm statistics stay local for every method)."""
        stored = set(self.model.state_dict())
        return {n for n, _ in self.model.named_buffers() if n in stored}

    def load_state(self, arrays: dict[str, np.ndarray], meta: Meta) -> None:
        model_state = {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}
        if model_state:
            result = self.model.load_state_dict(
                {k: torch.as_tensor(v) for k, v in model_state.items()}, strict=False)
            if result.unexpected_keys:
                raise ValueError(f"saved state holds {result.unexpected_keys}, not parts of "
                                 "this model")
        self.extra = {k: v for k, v in arrays.items() if not k.startswith("model/")}
        self.meta = dict(meta)

    def state(self) -> tuple[dict[str, np.ndarray], Meta]:
        """What this client keeps: the kept parts of its model, its extra arrays, its meta."""
        kept = self.kept()
        arrays = {f"model/{k}": v.detach().cpu().numpy().copy()
                  for k, v in self.model.state_dict().items() if k in kept}
        return {**arrays, **self.extra}, self.meta

    def reload(self, global_arrays: dict[str, np.ndarray]) -> None:
        """The client is already set up from this global model version: set the parts of the
        model it does not keep from the global arrays again, as `receive` did."""
        kept = self.kept()
        load_params(self.model, {n: v for n, v in global_arrays.items() if n not in kept})

    # ---- the method ------------------------------------------------------------------------
    def receive(self, global_arrays: dict[str, np.ndarray], version: int) -> None:
        """A new global model arrived: set up the model this client will use."""
        load_params(self.model, global_arrays)

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        """Local training; returns what to upload."""
        stats = self.train_model(self.model, self.optimizer(self.model), version)
        return FitResult(
            upload=Upload(arrays=shared_params(self.model)),
            num_examples=self.env.data.num_train,
            train_loss=stats.mean_loss,
        )

    def evaluate(self, version: int) -> tuple[EvalResult, dict[str, float]]:
        """The personalized model (set up from global model `version`) on the client's test
        data, plus method-specific metrics."""
        return self.evaluate_on(self.env.data.x_test, self.env.data.y_test), {}

    # ---- helpers for subclasses -----------------------------------------------------------
    @property
    def lr(self) -> float:
        return self.cfg.learning_rate

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=self.lr)

    def generator(self, purpose: str, version: int) -> torch.Generator:
        return torch_generator(self.cfg.seed, purpose, self.env.partition_id, version)

    def train_model(self, model: nn.Module, optimizer: torch.optim.Optimizer, version: int, *,
                    purpose: str = "train", epochs: int | None = None, **kwargs: Any):
        return train(
            model,
            optimizer,
            self.env.data,
            epochs=self.cfg.local_epochs if epochs is None else epochs,
            batch_size=self.cfg.batch_size,
            generator=self.generator(purpose, version),
            device=self.env.device,
            **kwargs,
        )

    def evaluate_on(self, x: torch.Tensor, y: torch.Tensor, model: nn.Module | None = None,
                    **kwargs: Any) -> EvalResult:
        return evaluate(model or self.model, x, y, self.env.data, device=self.env.device, **kwargs)


@dataclass(frozen=True)
class Method:
    name: str
    config: type[StrategyConfig]
    client: type[ClientMethod]
    strategy: type  # a PflStrategy subclass (flayer.protocol.rounds)

    def build_strategy(self, cfg: Config, layers: LayerMap, routing: Any = None) -> Any:
        """The method's server strategy for this run (a PflStrategy); `routing` says which
        node serves which client (default: a node per client, as on real machines)."""
        return self.strategy(cfg, cfg.strategy, layers, train_metrics=self.client.train_metrics,
                             routing=routing)


METHODS: Registry[Method] = Registry("method")


def register_method(name: str, config: type[StrategyConfig], client: type[ClientMethod],
                    strategy: type) -> Method:
    method = Method(name=name, config=config, client=client, strategy=strategy)
    METHODS.register(name)(method)
    return method
