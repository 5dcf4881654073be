"""The client side of a method: what one client does with one message.

The app (`flayer.apps.client_work`) hands a method's `ClientMethod` a model in the run's
initial state, restores what the method keeps, lets it take in the global model, train or
evaluate, and stores what it keeps back. A client kept out of training (`new_clients`) gets
`arrive` instead, from nothing kept, and nothing of it is stored. A method overrides only what
it changes.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flayer.config.schema import Config, MethodSettings
from flayer.data.federated import ClientData
from flayer.nn.layers import LayerMap
from flayer.nn.params import load_modules, load_part, shared_params, with_modules
from flayer.nn.training import EvalResult, TrainStats, evaluate, train
from flayer.protocol.upload import Upload
from flayer.util.seeding import torch_generator

Meta = dict[str, Any]  # ConfigRecord-compatible scalars and lists
LATE = "late"  # the seed purpose of a new client's local epochs (`ClientMethod.arrive`)


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

    What travels is said once, and the defaults follow from it:
      `shares`   the model parameters that travel (classmethod; every parameter by default).
                 The server holds them (`MethodServer.initial_global`), `receive` and
                 `reload` load them (`load_shared`), `upload` sends them.
      `modules`  extra modules exchanged beside them (none by default), under their arrays'
                 prefixes; the server builds its own copies (`MethodServer.modules`).
      `kept`     what the client keeps across rounds: the whole model by default;
                 `kept = ClientMethod.unshared` keeps exactly what no global model sets.
    Names are those of `net`, the run's model as handed in; a method that wraps it in a model
    of its own (`self.model`) still shares and keeps by those names.
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
        self.net = self.model  # the network `shares` names, inside self.model if wrapped
        self.meta: Meta = {}
        self.extra: dict[str, np.ndarray] = {}

    # ---- what travels ------------------------------------------------------------------------
    @property
    def shared(self) -> tuple[str, ...]:
        """The parameter names this method shares (`shares`) for this client's model."""
        return type(self).shares(self.settings, self.env.layers)

    def modules(self) -> dict[str, nn.Module]:
        """Extra modules exchanged beside the shared parameters, by the prefix of their
        arrays' names, as the server's `MethodServer.modules` names them (none by default)."""
        return {}

    def load_shared(self, global_arrays: dict[str, np.ndarray], skip: Collection[str] = ()
                    ) -> None:
        """Set the shared parameters and the extra modules from the global arrays, but the
        parts of the model named in `skip`; a global array naming a parameter the method does
        not share is refused (it would overwrite what the client keeps)."""
        prefix = self._prefix(self.net)
        load_part(self.net, global_arrays, self.shared,
                  skip={n for n in self.shared if prefix + n in skip})
        load_modules(self.modules(), global_arrays)

    def upload(self) -> Upload:
        """The shared parameters and the extra modules, in full."""
        return Upload(arrays=with_modules(shared_params(self.net, self.shared), self.modules()))

    def unshared(self) -> set[str]:
        """The parts of the model no global model sets: all but the shared parameters and the
        extra modules' (`kept = ClientMethod.unshared` keeps them)."""
        received = {self._prefix(self.net) + n for n in self.shared}
        for module in self.modules().values():
            prefix = self._prefix(module)
            received |= {prefix + n for n, _ in module.named_parameters()}
        return set(self.model.state_dict()) - received

    def _prefix(self, module: nn.Module) -> str:
        """How `self.model.state_dict()` prefixes the names of `module`, a part of it."""
        name = next(n for n, m in self.model.named_modules() if m is module)
        return f"{name}." if name else ""

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
        self.load_shared(global_arrays, skip=self.kept())

    # ---- the method ------------------------------------------------------------------------
    def receive(self, global_arrays: dict[str, np.ndarray], version: int) -> None:
        """A new global model arrived: set up the model this client will use."""
        self.load_shared(global_arrays)

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        """Local training; returns what to upload."""
        stats = self.train_model(self.model, self.optimizer(self.model), version)
        return self.result(self.upload(), stats)

    def evaluate(self, version: int) -> tuple[EvalResult, dict[str, float]]:
        """The personalized model (set up from global model `version`) on the client's test
        data, plus method-specific metrics."""
        return self.evaluate_on(self.env.data.x_test, self.env.data.y_test), {}

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        """A client that never trained with the others (`new_clients`) arrives late: from
        the run's initial model and nothing kept, it takes in global model `version`, is
        personalized the way this method personalizes a client that arrives late, for `epochs`
        local epochs on its own training data (0: it is evaluated with what it receives), and
        is evaluated. Nothing of it is kept (what it sets in `meta` or `extra` is dropped). By
        default it takes in the global model as any client does (`receive`) and fine-tunes the
        whole model with plain SGD at the run's rate."""
        self.receive(global_arrays, version)
        if epochs:
            self.train_model(self.model, self.optimizer(self.model), version, purpose=LATE,
                             epochs=epochs)
        return self.evaluate(version)

    # ---- helpers for subclasses -----------------------------------------------------------
    def result(self, upload: Upload, stats: TrainStats, *, with_terms: bool = False,
               loss: str | None = None, metrics: dict[str, float] | None = None
               ) -> FitResult:
        """The fit result of training that gave `stats`, weighted by the client's training
        samples. Its train loss is the training objective's mean, or with `loss` that loss
        term's mean; with `with_terms` the extra train metrics (`train_metrics`) are the loss
        terms' means; `metrics` gives them otherwise."""
        terms = stats.mean_terms() if with_terms or loss else {}
        if with_terms:
            metrics = {name: terms.get(name, math.nan) for name in self.train_metrics}
        train_loss = stats.mean_loss if loss is None else terms.get(loss, math.nan)
        return FitResult(upload, self.env.data.num_train, train_loss, metrics=metrics)

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
