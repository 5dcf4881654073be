"""Per-FedAvg (Fallah, Mokhtari and Ozdaglar, "Personalized Federated Learning with Theoretical
Guarantees: A Model-Agnostic Meta-Learning Approach", NeurIPS 2020), first-order version
(Per-FedAvg (FO)).

Nothing is personal but the BatchNorm statistics: every client trains, uploads and receives
the whole meta-model w, and the server takes the sample-weighted mean (FedAvg). The objective
is the MAML one, the loss after one local gradient step, F_i(w) = f_i(w - alpha grad f_i(w)).
Each local step takes two fresh batches D and D' from the client's shuffled training data
and
  1. steps a temporary copy: w_tmp = w - alpha * grad f(w; D),
  2. takes the gradient at the temporary parameters on D' and applies it to the original
     parameters: w <- w - beta * grad f(w_tmp; D').
The first-order version drops the Hessian term of the exact gradient of F_i. alpha is the
run's learning rate (PFLlib's). One step consumes 2 * batch_size samples (PFLlib loads
batches of twice the batch size and splits each in halves, D first), so an epoch makes
num_train / (2 * batch_size) steps; the last, smaller batch is split in halves too. BatchNorm
statistics move in both forward passes, as in PFLlib.

Evaluation: the client's personalized model is the received meta-model adapted by one SGD
step (rate alpha) on one training batch of batch_size samples (seeded by run seed, client and
model version), then evaluated on the client's test data. The step is taken on a copy: the
client's stored state (its BatchNorm statistics) is not changed by evaluation.

The train loss is that of the adapted parameters on the second batch of each step (the loss
the method minimizes).

A client that arrives late (`new_clients`) is the new user the meta-model is trained for: it
takes the one adaptation step every client's evaluation takes (one SGD step at rate alpha on
one seeded training batch) from the received meta-model and is evaluated with the adapted
copy. `new_client_epochs` only says whether it takes that step (0: the meta-model as
received).

Settings (conf/strategy/perfedavg.yaml):
  beta  the meta step's rate; default null, which means the run's learning rate. PFLlib's
        `-bt` defaults to 0, which its optimizer reads as "use the learning rate", and its
        current client sets beta to the learning rate outright.

Where PFLlib departs from the paper (the paper is followed here):
  - PFLlib's server calls each selected client's local training twice per round (two epochs
    of two-step updates); here a round trains `local_epochs` epochs, as for every method
    (`local_epochs=2` reproduces PFLlib);
  - PFLlib's evaluation step leaves the BatchNorm statistics it moved in the client's model;
    here it works on a copy.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from baselines.fedavg import FedAvgClient
from baselines.settings.perfedavg import PerFedAvgSettings
from flayer.nn.training import EvalResult, TrainStats, cross_entropy, train
from flayer.protocol.client import FitResult
from flayer.protocol.method import register_method


def halves(n: int) -> tuple[slice, slice]:
    """The two batches one step takes from n loaded samples: the first ceil(n/2) and the rest
    (a single sample serves both)."""
    if n < 2:
        return slice(0, n), slice(0, n)
    h = (n + 1) // 2
    return slice(0, h), slice(h, n)


def first_order_meta_loss(alpha: float):
    """The loss whose gradient w.r.t. w is Per-FedAvg (FO)'s: f(w - alpha * grad f(w; D); D')
    with the inner gradient a constant, so that d/dw = grad f(w_tmp; D')."""

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        first, second = halves(len(y))
        params = dict(model.named_parameters())
        inner = cross_entropy(model, x[first], y[first])
        grads = torch.autograd.grad(inner, list(params.values()), allow_unused=True)
        temporary = {n: p if g is None else p - alpha * g.detach()
                     for (n, p), g in zip(params.items(), grads, strict=True)}
        return F.cross_entropy(functional_call(model, temporary, (x[second],)), y[second])

    return loss_fn


class PerFedAvgClient(FedAvgClient):
    """FedAvg's state and upload (everything but the BatchNorm statistics comes from the
    global model); two-step local updates; evaluation after one adaptation step."""

    settings: PerFedAvgSettings

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        beta = self.settings.meta_rate(self.cfg)
        stats = self.train_meta(torch.optim.SGD(self.model.parameters(), lr=beta), version)
        return self.result(self.upload(), stats)

    def train_meta(self, optimizer: torch.optim.Optimizer, version: int) -> TrainStats:
        """The local epochs of two-step updates: the one training loop on batches of twice
        the batch size, each split into the step's two batches."""
        return train(self.model, optimizer, self.env.data, epochs=self.cfg.local_epochs,
                     batch_size=2 * self.cfg.batch_size,
                     generator=self.generator("train", version), device=self.env.device,
                     loss_fn=first_order_meta_loss(self.lr))

    def adapted(self, version: int) -> nn.Module:
        """A copy of the model after one SGD step (rate alpha) on one seeded training
        batch."""
        data, device = self.env.data, self.env.device
        n = data.num_train
        idx = torch.randperm(n, generator=self.generator("perfedavg-eval", version))
        idx = idx[:min(self.cfg.batch_size, n)]
        model = copy.deepcopy(self.model)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr)
        x = data.to_input(data.x_train[idx]).to(device)
        y = data.y_train[idx].to(device)
        optimizer.zero_grad(set_to_none=True)
        cross_entropy(model, x, y).backward()
        optimizer.step()
        return model

    def evaluate(self, version: int) -> tuple[EvalResult, dict[str, float]]:
        model = self.adapted(version)
        return self.evaluate_on(self.env.data.x_test, self.env.data.y_test, model=model), {}

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        self.receive(global_arrays, version)  # the meta-model
        if epochs == 0:  # the meta-model as received, not adapted
            return self.evaluate_on(self.env.data.x_test, self.env.data.y_test), {}
        return self.evaluate(version)  # its one adaptation step


register_method("perfedavg", PerFedAvgSettings, PerFedAvgClient)
