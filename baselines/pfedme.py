"""pFedMe (T. Dinh, Tran and Nguyen, "Personalized Federated Learning with Moreau Envelopes",
NeurIPS 2020).

Each client has a personalized model theta and a local copy w of the global model. theta is
the approximate minimizer of the Moreau envelope's inner problem

    h(theta; w, batch) = f(theta; batch) + (lamda / 2) * ||theta - w||^2,

where f is the cross-entropy; w moves toward theta, so that the global model learns from the
personalized ones. theta stays on the client and is the model it evaluates; only w travels.

Local procedure (every sampled client, paper Algorithm 1):
  1. theta and w both start from the received global model (w_{i,0} = w_t in the paper;
     theta as in the authors' code and PFLlib, whose `set_parameters` overwrites both).
  2. For every batch of the run's batch loop (`local_epochs` epochs, batch size, shuffling:
     flayer.nn.training.train), K steps of gradient descent on h at rate `p_learning_rate`,
         theta <- theta - p_learning_rate * (grad f(theta; batch) + lamda * (theta - w)),
     starting from the current theta (warm start: theta carries over from the previous
     batch, it is not reset to w), then the outer step on w with the run's learning rate,
         w <- w - lr * lamda * (w - theta).
     That is K forward/backward passes per batch and nothing more; the w step needs none.
  3. Upload w. Keep theta (with its BatchNorm statistics, which its K forward passes per
     batch update, as in PFLlib): it is the model `evaluate` uses in this round's evaluation
     and in every later one until the client trains again. Receiving a newer global model
     does not touch theta; a client's first message sets it from the global model it brings.
Train loss: f(theta; batch) at each batch's last inner step (the data part of h).

Server (paper Algorithm 1): with the sample-weighted mean of the uploaded w_i,
    w_global <- (1 - beta) * w_global + beta * mean_i(w_i),
so beta = 1 is FedAvg's plain mean (exactly) and beta > 1 extrapolates, as the paper allows.
The mix of the previous model and the mean (as FedAvg stores it) is taken in float64 and stored
in the global arrays' dtype; nothing beyond the global arrays is held on the server.

A client that arrives late (`new_clients`) starts theta as the received global model and moves
it with `new_client_epochs` epochs of pFedMe's local procedure (K inner steps per batch, the
outer step on w); it is evaluated with theta.

Settings (conf/strategy/pfedme.yaml):
  K                inner steps per batch; default 5 (the paper's experiments; PFLlib `-K`)
  p_learning_rate  rate of the inner steps on theta; default 0.01 (PFLlib main.py's `-lrp`
                   default; the authors' Synthetic and CIFAR-10 commands also use 0.01, their
                   MNIST ones 0.09-0.1, and PFLlib's system/examples.sh 0.1 for the CNN on
                   MNIST and Fashion-MNIST, 0.01 on CIFAR and AG News)
  lamda            weight of the proximal term; default 15 (the paper's MNIST runs, the
                   authors' CIFAR-10 command and PFLlib's system/examples.sh `-lam 15`;
                   PFLlib main.py's default is 1.0)
  beta             the server's mixing weight; default 1.0 (the paper's comparison runs, 2 in
                   its tuned ones, and PFLlib's examples.sh `-bt 1`; PFLlib main.py's default
                   `-bt 0.0` would keep the global model at its initial value forever)
Rules: p_learning_rate * lamda < 2 and lr * lamda < 2 (beyond, the proximal step on theta, or
w's step toward theta, overshoots by more than it closes and diverges).

Where the references depart from the paper, the paper is followed:
  - Both the authors' code and PFLlib add a weight decay mu * theta (mu = 0.001, the inner
    optimizer's default) to the inner gradient; the paper's inner problem has none, nor
    has this one.
  - In PFLlib (commit d832e76) the "personalized parameters" returned by the inner optimizer
    are the model's own parameter tensors, not a copy: local training ends by writing w into
    them, and each round's `send_models` writes the new global model into them before
    `evaluate_personalized` runs. Its personalized accuracy is thus the freshly received
    global model's (the initial model's for a client that has never trained), which is why
    it tracks PFLlib's FedAvg. Here theta itself is kept and evaluated, as the paper
    describes.
  - The authors' code trains every client each round and aggregates a sample; PFLlib (and
    flayer) train only the sampled clients. A client that is not sampled keeps its theta.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from baselines.settings.pfedme import PFedMeSettings
from flayer.nn.params import load_params
from flayer.nn.training import EvalResult, TrainStats, cross_entropy
from flayer.protocol.aggregation import WeightedSum
from flayer.protocol.client import LATE, ClientMethod, FitResult
from flayer.protocol.method import register_method
from flayer.protocol.server import MethodServer
from flayer.protocol.upload import Upload

INITIALIZED = "pfedme_initialized"  # meta flag: theta has been set from a global model


class MoreauSteps(torch.optim.Optimizer):
    """theta's optimizer: each step is one gradient step on the inner problem
    f(theta) + lamda/2 ||theta - w||^2 (the data gradient is theta's `.grad`); every K-th step
    ends a batch's inner solve and takes the outer step w <- w - lr * lamda * (w - theta)."""

    def __init__(self, theta: Sequence[nn.Parameter], w: Sequence[torch.Tensor], *,
                 p_learning_rate: float, lamda: float, lr: float, k: int) -> None:
        super().__init__(list(theta), {"lr": p_learning_rate})
        self.theta, self.w = list(theta), list(w)
        self.lamda, self.outer_lr, self.k = lamda, lr, k
        self.inner = 0  # inner steps taken in the current batch

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:  # type: ignore[override]
        rate = self.param_groups[0]["lr"]
        pull = rate * self.lamda
        for theta, w in zip(self.theta, self.w, strict=True):
            # theta - rate * (grad + lamda * (theta - w)), in place and from the same theta
            theta.mul_(1 - pull).add_(w, alpha=pull)
            if theta.grad is not None:
                theta.add_(theta.grad, alpha=-rate)
        self.inner += 1
        if self.inner == self.k:
            self.inner = 0
            move = self.outer_lr * self.lamda
            for theta, w in zip(self.theta, self.w, strict=True):
                w.mul_(1 - move).add_(theta, alpha=move)


class PFedMeClient(ClientMethod):
    """`self.model` is theta (evaluated and kept whole); w lives only during `fit`."""

    settings: PFedMeSettings

    def receive(self, global_arrays: dict[str, np.ndarray], version: int) -> None:
        # theta starts as the first global model the client sees; later ones reach it only
        # through training (fit starts theta from the global model it trains)
        if not self.meta.get(INITIALIZED, False):
            load_params(self.model, global_arrays)
            self.meta[INITIALIZED] = True

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        stats, w = self.train_moreau(global_arrays, version)
        names = [n for n, _ in self.model.named_parameters()]
        upload = {n: t.detach().cpu().numpy().copy() for n, t in zip(names, w, strict=True)}
        return self.result(Upload(arrays=upload), stats)

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        self.receive(global_arrays, version)  # theta starts as the global model
        if epochs:
            self.train_moreau(global_arrays, version, epochs=epochs, purpose=LATE)
        return self.evaluate(version)

    def train_moreau(self, global_arrays: dict[str, np.ndarray], version: int, *,
                     epochs: int | None = None, purpose: str = "train"
                     ) -> tuple[TrainStats, list[torch.Tensor]]:
        """The local procedure from the received global model: theta's inner steps and w's
        outer steps; returns the stats and w."""
        load_params(self.model, global_arrays)  # theta starts from the received global
        self.meta[INITIALIZED] = True
        names = [n for n, _ in self.model.named_parameters()]
        device = self.env.device
        w = [torch.tensor(global_arrays[n], device=device) for n in names]
        s = self.settings
        optimizer = MoreauSteps(list(self.model.parameters()), w,
                                p_learning_rate=s.p_learning_rate, lamda=s.lamda, lr=self.lr,
                                k=s.K)

        def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            """The batch's first K - 1 inner steps; the loop takes the K-th on the loss
            returned (and with it the step on w)."""
            for _ in range(s.K - 1):
                optimizer.zero_grad(set_to_none=True)
                cross_entropy(model, x, y).backward()
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return cross_entropy(model, x, y)

        stats = self.train_model(self.model, optimizer, version, purpose=purpose, epochs=epochs,
                                 loss_fn=loss_fn)
        return stats, w


class PFedMeServer(MethodServer):
    """Every parameter of w in full; the new global model is the beta mix of the previous one
    and the sample-weighted mean of the uploads."""

    settings: PFedMeSettings

    def aggregate_sums(self, total: WeightedSum, previous: dict[str, np.ndarray]
                       ) -> dict[str, np.ndarray]:
        mean = total.mean(previous)
        beta = self.settings.beta
        return {k: ((1 - beta) * previous[k].astype(np.float64)
                    + beta * mean[k].astype(np.float64)).astype(previous[k].dtype)
                for k in previous}


register_method("pfedme", PFedMeSettings, PFedMeClient, PFedMeServer)
