"""The client side of a method: what one client does with one message.

The app (`flayer.apps.client_work`) hands a method's `ClientMethod` a model in the run's
initial state, restores what the method keeps, lets it take in the global model, train or
evaluate, and stores what it keeps back. A method overrides only what it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flayer.config.schema import Config, MethodSettings
from flayer.data.federated import ClientData
from flayer.nn.layers import LayerMap
from flayer.nn.params import load_params, shared_params
from flayer.nn.training import EvalResult, TrainStats, evaluate, train
from flayer.protocol.upload import Upload
from flayer.util.seeding import torch_generator

Meta = dict[str, Any]  # ConfigRecord-compatible scalars and lists


@dataclass
class ClientEnv:
    """Everything a method's client side may use for one message."""

    cfg: Config
    settings: MethodSettings  # the method's own settings
    partition_id: int
    data: ClientData
    layers: LayerMap
    device: torch.device
    # the message's instructions (server round, model version, method-specific keys)
    instructions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FitResult:
    """What a client's training gives back: its upload, the weight of its upload (its
    training samples), its mean training loss and the method's extra train metrics."""

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
    def holdout_fraction(cls, settings: MethodSettings) -> float:
        return 0.0

    @classmethod
    def shares(cls, settings: MethodSettings, layers: LayerMap) -> tuple[str, ...]:
        """The model parameters that travel: the server holds, sends and averages them, and a
        client takes them in from every global model and uploads them after training. Every
        parameter by default; a method that keeps a part of the model personal shares less."""
        return layers.param_names

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
        return self.result(Upload(arrays=shared_params(self.model)), stats)

    def evaluate(self, version: int) -> tuple[EvalResult, dict[str, float]]:
        """The personalized model (set up from global model `version`) on the client's test
        data, plus method-specific metrics."""
        return self.evaluate_on(self.env.data.x_test, self.env.data.y_test), {}

    # ---- helpers for subclasses -----------------------------------------------------------
    @property
    def shared(self) -> tuple[str, ...]:
        """The parameter names this method shares (`shares`) for this client's model."""
        return type(self).shares(self.settings, self.env.layers)

    def result(self, upload: Upload, stats: TrainStats, with_terms: bool = False
               ) -> FitResult:
        """The fit result of training that gave `stats`: weighted by the client's training
        samples; with `with_terms`, the loss terms' means as the extra train metrics."""
        return FitResult(upload, self.env.data.num_train, stats.mean_loss,
                         metrics=stats.mean_terms() if with_terms else None)

    @property
    def lr(self) -> float:
        return self.cfg.learning_rate

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=self.lr)

    def generator(self, purpose: str, version: int) -> torch.Generator:
        return torch_generator(self.cfg.seed, purpose, self.env.partition_id, version)

    def train_model(self, model: nn.Module, optimizer: torch.optim.Optimizer, version: int, *,
                    purpose: str = "train", epochs: int | None = None,
                    **kwargs: Any) -> TrainStats:
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
