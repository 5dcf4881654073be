"""FedDBE (Zhang, Hua, Cao, Wang, Song, Xue, Ma and Guan, "Eliminating Domain Bias for Federated
Learning in Representation Space", NeurIPS 2023): FedAvg with a Domain Bias Eliminator.

The feature h is the head's input (the project's layer notion). Each client keeps a personal
representation bias b (PRBM: a vector of the feature width, zero at the start, trained with the
model at the same learning rate, persisted, never uploaded); the head reads h + b. During local
training a running mean of the batch feature means is kept,

    m <- (1 - momentum) * m + momentum * mean_batch(h),   m = 0 at the start of each round,

(gradients flow through the current batch only, as in the reference code) and the mean
regularizer kappa * mean(0.5 * (m - g)^2) pulls it toward the global mean g. The whole model is
uploaded and averaged as FedAvg does; b and m stay on the client.

The global mean g is computed once, before round 1, as part of round 0: the server sends every
client a train message marked with the phase key; each client trains a throwaway copy of the
initial model for one epoch without the DBE terms, tracking the same running mean, and uploads
that mean; the server takes the sample-weighted mean and holds it as a server-only array sent
with every later model (never uploaded, so aggregation keeps it). These replies' bytes count in
round 0. The client's own model is untouched by that pass (in the reference the clients' models
are overwritten by the global one before round 0's evaluation).

A client that arrives late (`new_clients`) takes in the model with a zero representation bias
and trains for `new_client_epochs` epochs as FedDBE trains (the bias learns, the running
feature mean is pulled toward the global mean); it is evaluated with the bias.

Settings (conf/strategy/feddbe.yaml):
  momentum  weight of the current batch in the running feature mean; default 0.1 (PFLlib's
            default; the authors' own run script for Fashion-MNIST Dir(0.1) uses 1.0)
  kappa     weight of the mean regularizer (PFLlib `kl_weight`, whose command-line default 0
            disables it); default 50, the value of the authors' DBE run script (`-klw 50`,
            Fashion-MNIST Dir(0.1), 4-layer CNN, the default setup here); no value is stated
            in the paper or PFLlib. docs/results.md: the settings tried on the default setup.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.settings.feddbe import FedDBESettings
from flayer.nn.layers import LayerMap, features
from flayer.nn.training import EvalResult, Terms, TrainStats
from flayer.protocol.client import LATE, ClientEnv, ClientMethod, FitResult
from flayer.protocol.method import register_method
from flayer.protocol.server import AskEveryClient, MethodServer
from flayer.protocol.upload import TensorSpec, Upload, UploadSpec
from flayer.results.record import RoundRecord

log = logging.getLogger(__name__)

GLOBAL_MEAN = "feddbe.global_mean"  # server-only array: the global feature mean g
FEATURE_MEAN = "feddbe.feature_mean"  # a client's reply in the round-0 phase
RUNNING_MEAN = "feddbe.running_mean"  # the client's last running mean (extra state)
PHASE = "feddbe-phase"  # config key of the round-0 train message
PHASE_MEAN = "feature-mean"


class RunningMean:
    """Momentum mean of batch feature means; the returned value carries the current batch's
    gradient, the stored one is detached (earlier batches are constants)."""

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum
        self.value: torch.Tensor | None = None

    def update(self, h: torch.Tensor) -> torch.Tensor:
        previous = torch.zeros_like(h[0]) if self.value is None else self.value
        new = (1 - self.momentum) * previous + self.momentum * h.mean(dim=0)
        self.value = new.detach()
        return new


class DBEModel(nn.Module):
    """The base model plus the personal representation bias in front of its head."""

    def __init__(self, net: nn.Module, layers: LayerMap) -> None:
        super().__init__()
        self.layers = layers
        self.net = net
        self.bias = nn.Parameter(torch.zeros(layers.feature_width(net)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return features(self.net, self.layers, x)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.layers.head_module(self.net)(h + self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FedDBEClient(ClientMethod):
    settings: FedDBESettings
    model: DBEModel
    # train-loss is the objective; these are its cross-entropy and the (unweighted) regularizer
    train_metrics = ("ce-loss", "mean-reg")

    def __init__(self, env: ClientEnv, model: nn.Module) -> None:
        super().__init__(env, model)
        self.model = DBEModel(model, env.layers).to(env.device)

    # the base model (`net`) is shared whole and the global mean is the server's own, so
    # the defaults receive and upload; the running mean is kept among the extra arrays
    kept = ClientMethod.unshared  # the bias and the BatchNorm statistics

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        if self.env.instructions.get(PHASE) == PHASE_MEAN:
            return self.feature_mean(version)
        stats = self.train_dbe(global_arrays, version)
        return self.result(self.upload(), stats, with_terms=True)

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        self.receive(global_arrays, version)  # the base model; the bias starts at zero
        if epochs:
            self.train_dbe(global_arrays, version, epochs=epochs, purpose=LATE)
        return self.evaluate(version)

    def train_dbe(self, global_arrays: dict[str, np.ndarray], version: int, *,
                  epochs: int | None = None, purpose: str = "train") -> TrainStats:
        """Local training with the bias and the mean regularizer toward the global mean."""
        if GLOBAL_MEAN not in global_arrays:
            raise RuntimeError("FedDBE: the global model carries no global feature mean")
        target = torch.as_tensor(global_arrays[GLOBAL_MEAN], device=self.env.device)
        running = RunningMean(self.settings.momentum)
        kappa = self.settings.kappa

        def loss_fn(model: DBEModel, x: torch.Tensor, y: torch.Tensor) -> Terms:
            h = model.features(x)
            m = running.update(h)
            ce = F.cross_entropy(model.head(h), y)
            regularizer = torch.mean(0.5 * (m - target) ** 2)
            return Terms(ce + kappa * regularizer, {"ce-loss": ce, "mean-reg": regularizer})

        optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr)  # bias included
        stats = self.train_model(self.model, optimizer, version, purpose=purpose, epochs=epochs,
                                 loss_fn=loss_fn)
        if running.value is not None:
            self.extra[RUNNING_MEAN] = running.value.cpu().numpy()
        return stats

    def feature_mean(self, version: int) -> FitResult:
        """Round 0's phase: one epoch on a copy, no DBE terms; reply with the running mean."""
        net = copy.deepcopy(self.net)
        layers = self.env.layers
        running = RunningMean(self.settings.momentum)

        def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            h = features(model, layers, x)
            running.update(h)
            return F.cross_entropy(layers.head_module(model)(h), y)

        stats = self.train_model(net, torch.optim.SGD(net.parameters(), lr=self.lr), version,
                                 purpose="feddbe-mean", epochs=1, loss_fn=loss_fn)
        assert running.value is not None, "a client without training data"
        mean = running.value.cpu().numpy().astype(np.float32)
        return self.result(Upload(arrays={FEATURE_MEAN: mean}), stats)


class FedDBEServer(MethodServer):
    """FedAvg on the model's parameters, plus the global feature mean computed in round 0."""

    settings: FedDBESettings
    width: int

    def initial_global(self, model: nn.Module) -> dict[str, np.ndarray]:
        self.width = self.layers.feature_width(model)
        return super().initial_global(model)

    def upload_spec(self, global_arrays: dict[str, np.ndarray]) -> UploadSpec:
        return {name: TensorSpec(tuple(arr.shape)) for name, arr in global_arrays.items()
                if name != GLOBAL_MEAN}

    def prepare_round0(self, ask: AskEveryClient, rec: RoundRecord) -> dict[str, np.ndarray]:
        spec = {FEATURE_MEAN: TensorSpec((self.width,))}
        got = ask(rec, spec, **{PHASE: PHASE_MEAN})
        if not got.clients:
            raise RuntimeError("FedDBE: no client reported its feature mean in round 0")
        zero = {FEATURE_MEAN: np.zeros(self.width, dtype=np.float32)}
        mean = got.total.mean(zero)[FEATURE_MEAN]
        log.info("FedDBE: global feature mean from %d clients (norm %.4f)", len(got.clients),
                 float(np.linalg.norm(mean)))
        return {GLOBAL_MEAN: mean}


register_method("feddbe", FedDBESettings, FedDBEClient, FedDBEServer)
