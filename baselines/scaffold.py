"""SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich and Suresh, "SCAFFOLD: Stochastic Controlled
Averaging for Federated Learning", ICML 2020): FedAvg with control variates that correct each
client's drift.

The server holds the global model x and a global control variate c (one tensor per model
parameter, zero at the start); each client keeps its own control variate c_i (zero at the
start, never uploaded). Every message carries x and c (c rides with the model as a server-only
array, as FedDBE's global mean does, so checkpoints hold it). A sampled client sets y <- x and
takes K local SGD steps (E epochs, `local_epochs`, of batches) on the corrected gradient

    y <- y - lr * (g(y) - c_i + c),

then updates its control variate with the paper's option II,

    c_i+ = c_i - c + (x - y) / (K * lr),

keeps c_i+, and sends y and Delta c_i = c_i+ - c_i. The server updates

    x <- x + server_lr * (mean_i(y_i) - x),      c <- c + (1 / N) * sum_{i in S} Delta c_i,

with N = num_clients and S the clients whose upload was accepted. A client's accuracy is that
of the received global model x (with its own BatchNorm statistics), as for FedAvg.

What travels, and why:
  * y_i rather than Delta y_i = y_i - x: the server holds x, so the two carry the same
    information at the same bytes, and forming the update from mean(y_i) makes server_lr = 1
    give exactly FedAvg's average (x + 1 * (mean - x) computed as 0 * x + mean, no rounding
    of a difference). With zero control variates (round 1) the corrected step is plain SGD,
    so round 1 equals FedAvg's round 1 to the bit.
  * mean_i is the sample-weighted mean over the accepted clients, as FedAvg here takes it;
    the paper and PFLlib average Delta y uniformly over the sampled clients. Weighting keeps
    SCAFFOLD a correction of this project's FedAvg (and equal to it in round 1); with clients
    of equal size the two are the same.
  * Delta c_i goes up divided by the client's sample count: the executors and the server sum
    every upload weighted by its sample count, so the weighted sum of Delta c_i / n_i is the
    plain sum the paper's c update needs (exact up to the float32 rounding of the division,
    the precision c is held in).

K is the number of SGD steps the client actually took in the round (local_epochs times its
batches per epoch); PFLlib divides by the batches of one epoch only, which equals the paper's K
only for one local epoch (the default). The c update divides by N, as the paper and PFLlib do,
which keeps c the mean of all clients' c_i. A client whose upload the server rejects has still
updated its own c_i (as a dropped client does in PFLlib); c then misses that client's change.

A client that arrives late (`new_clients`) has no control variate yet (c_i = 0): it trains the
received x for `new_client_epochs` epochs with the gradient corrected by the received c, as its
first local update would, and is evaluated with the result (uploading nothing).

Settings (conf/strategy/scaffold.yaml):
  server_lr  the global step size eta_g on the averaged update; default 1.0, the
             comparison's setting and PFLlib's `server_learning_rate` default (1 makes the
             new x the average of the clients' models).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from baselines.fedavg import FedAvgClient
from baselines.settings.scaffold import ScaffoldSettings
from flayer.nn.params import shared_params
from flayer.nn.training import EvalResult, TrainStats
from flayer.protocol.aggregation import WeightedSum
from flayer.protocol.client import LATE, FitResult
from flayer.protocol.method import register_method
from flayer.protocol.server import MethodServer
from flayer.protocol.upload import TensorSpec, Upload, UploadSpec

CONTROL = "scaffold.c."  # + parameter name: the global control variate c (server-only)
DELTA_C = "scaffold.dc."  # + parameter name: a client's Delta c_i / n_i (uploaded)
CLIENT_C = "scaffold.ci."  # + parameter name: the client's own c_i (extra state)


def model_part(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's parameters among the global arrays (without the control variate)."""
    return {k: v for k, v in arrays.items() if not k.startswith(CONTROL)}


def corrected_gradient(model: nn.Module, correction: dict[str, torch.Tensor]
                       ) -> tuple[Callable[[int, int], None], list[int]]:
    """A `before_step` hook adding (c - c_i) to every parameter's gradient, so that the SGD
    step is y - lr * (g - c_i + c); and a one-element list counting the steps taken."""
    params = list(model.named_parameters())
    steps = [0]

    def hook(epoch: int, batch: int) -> None:
        with torch.no_grad():
            for name, p in params:
                if p.grad is None:
                    p.grad = correction[name].clone()
                else:
                    p.grad.add_(correction[name])
        steps[0] += 1

    return hook, steps


def option_two(c_i: np.ndarray, c: np.ndarray, x: np.ndarray, y: np.ndarray, steps: int,
               lr: float) -> np.ndarray:
    """The paper's option II: c_i+ = c_i - c + (x - y) / (K lr)."""
    return c_i - c + (x - y) / np.float32(steps * lr)


class ScaffoldClient(FedAvgClient):
    """FedAvg's client with the drift correction and its own control variate c_i."""

    settings: ScaffoldSettings

    def own_control(self) -> dict[str, np.ndarray]:
        """c_i by parameter name: the kept one, zero before the client's first training."""
        return {n: self.extra.get(CLIENT_C + n, np.zeros(p.shape, dtype=np.float32))
                for n, p in self.model.named_parameters()}

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        x = shared_params(self.model)  # the received global model
        c = {n: global_arrays[CONTROL + n] for n in x}
        c_i = self.own_control()
        stats, steps = self.train_corrected(c, c_i, version)
        if steps == 0:
            raise RuntimeError("SCAFFOLD: a client took no local step")
        y = shared_params(self.model)
        n = self.env.data.num_train
        upload = dict(y)
        for name in x:
            new = option_two(c_i[name], c[name], x[name], y[name], steps, self.lr)
            upload[DELTA_C + name] = (new - c_i[name]) / np.float32(n)
            self.extra[CLIENT_C + name] = new
        return self.result(Upload(arrays=upload), stats)

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        self.receive(global_arrays, version)  # x; a client new to the run has c_i = 0
        if epochs:
            c = {n: global_arrays[CONTROL + n] for n, _ in self.model.named_parameters()}
            self.train_corrected(c, self.own_control(), version, epochs=epochs, purpose=LATE)
        return self.evaluate(version)

    def train_corrected(self, c: dict[str, np.ndarray], c_i: dict[str, np.ndarray],
                        version: int, *, epochs: int | None = None, purpose: str = "train"
                        ) -> tuple[TrainStats, int]:
        """Local SGD on the gradient corrected by c - c_i; returns the stats and the steps."""
        device = self.env.device
        correction = {n: torch.as_tensor(c[n] - c_i[n], device=device) for n in c}
        hook, steps = corrected_gradient(self.model, correction)
        stats = self.train_model(self.model, self.optimizer(self.model), version,
                                 purpose=purpose, epochs=epochs, before_step=hook)
        return stats, steps[0]


class ScaffoldServer(MethodServer):
    """Holds x and c; takes y and Delta c_i / n_i in full; moves x by server_lr toward the
    sample-weighted mean of y and c by the plain sum of Delta c_i over N."""

    settings: ScaffoldSettings

    def initial_global(self, model: nn.Module) -> dict[str, np.ndarray]:
        x = super().initial_global(model)
        return {**x, **{CONTROL + n: np.zeros_like(v) for n, v in x.items()}}

    def upload_spec(self, global_arrays: dict[str, np.ndarray]) -> UploadSpec:
        x = model_part(global_arrays)
        return {**{n: TensorSpec(tuple(v.shape)) for n, v in x.items()},
                **{DELTA_C + n: TensorSpec(tuple(v.shape)) for n, v in x.items()}}

    def aggregate_sums(self, total: WeightedSum, previous: dict[str, np.ndarray]
                       ) -> dict[str, np.ndarray]:
        eta = float(self.settings.server_lr)
        out = dict(previous)
        for name, x in model_part(previous).items():
            if name not in total.num:
                continue
            mean = total.num[name] / total.den[name]  # float64, FedAvg's sample-weighted mean
            # x + eta (mean - x), written so that eta = 1 gives the mean itself, unrounded
            out[name] = ((1.0 - eta) * x.astype(np.float64) + eta * mean).astype(x.dtype)
            key = CONTROL + name
            delta = total.num.get(DELTA_C + name)
            if delta is not None:  # the weighted sum of Delta c_i / n_i: the plain sum
                c = previous[key]
                out[key] = (c.astype(np.float64) + delta / self.cfg.num_clients).astype(c.dtype)
        return out


register_method("scaffold", ScaffoldSettings, ScaffoldClient, ScaffoldServer)
