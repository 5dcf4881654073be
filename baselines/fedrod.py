"""FedRoD (Chen and Chao, "On Bridging Generic and Personalized Federated Learning for Image
Classification", ICLR 2022): a generic model trained with a class-balanced loss, plus a personal
head whose logits are added to the generic ones.

The feature h is the head's input (the project's layer notion, `flayer.nn.layers`). The model
(body and its head, the generic head) is the generic model: received from the server every
round, trained locally, uploaded whole and averaged by sample-weighted mean as FedAvg does.
Next to it each client keeps a personal head, a Linear of the head's shape that starts as a copy
of the initial model's head (PFLlib) and never leaves the client. The client's prediction is

    output(x) = generic(h) + personal(h).

Local training, per batch, from one forward pass (E epochs, `local_epochs`):
  - the body and the generic head take a step on the balanced softmax loss

        BSM = CE(generic(h) + log n, y),

    n the client's number of training samples of each class. A class the client holds no
    sample of has n = 0, so log n = -inf and it drops out of the softmax: the paper's
    p(y | x) proportional to n_y exp(z_y), and PFLlib, which takes the log of the raw counts
    (no small count is put in for absent classes);
  - the personal head takes a step on the client's empirical risk of the summed output,

        CE(generic(h).detach() + personal(h.detach()), y):

    the feature and the generic logits are constants there, so the personal loss moves only
    the personal head, and the BSM never moves it (PFLlib: two optimizers, the personal one
    over the personal head alone, on the detached feature and generic logits).
Both steps are plain SGD at the run's learning rate from the same forward pass, and each loss
reaches only its own parameters, so they are taken as one SGD step on the sum of both losses.
The reported train loss is the BSM (the loss of what is federated, as Ditto reports its global
copy's); the personal CE is the metric `personal-loss`.

A client that arrives late (`new_clients`) takes in the generic model with a fresh personal
head (a copy of the initial head); only the personal head learns, for `new_client_epochs`
epochs, on the summed output (training's personal loss, the generic model fixed), and the
client is evaluated with generic + personal.

Settings: none. PFLlib has none; the personal head is its linear one (the paper also describes
a hypernetwork that generates the personal head, not implemented here). Needs a Linear head
after a body (`require_linear_head`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.settings.fedrod import FedRoDSettings
from flayer.nn.layers import LayerMap, features
from flayer.nn.training import EvalResult, Terms, only_trainable
from flayer.protocol.client import LATE, ClientEnv, ClientMethod, FitResult
from flayer.protocol.method import register_method


def log_class_counts(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log of the number of samples of each class in y (-inf for a class y lacks)."""
    return torch.bincount(y, minlength=num_classes).to(torch.float32).log()


def balanced_softmax_loss(logits: torch.Tensor, y: torch.Tensor,
                          log_counts: torch.Tensor) -> torch.Tensor:
    """Balanced softmax: cross-entropy of the logits shifted by the log class counts."""
    return F.cross_entropy(logits + log_counts.to(logits.device, logits.dtype), y)


class RoDModel(nn.Module):
    """The base model (body + generic head) and the personal head on the same feature;
    `forward` is the personalized prediction, so the common evaluation loop applies."""

    def __init__(self, net: nn.Module, layers: LayerMap) -> None:
        super().__init__()
        self.layers = layers
        self.net = net
        self.personal = copy.deepcopy(layers.head_module(net))

    @property
    def generic(self) -> nn.Module:
        return self.layers.head_module(self.net)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return features(self.net, self.layers, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.generic(h) + self.personal(h)


class FedRoDClient(ClientMethod):
    settings: FedRoDSettings
    model: RoDModel
    # train-loss is the generic model's balanced softmax loss
    train_metrics = ("personal-loss",)

    def __init__(self, env: ClientEnv, model: nn.Module) -> None:
        super().__init__(env, model)
        self.model = RoDModel(model, env.layers).to(env.device)

    # the base model (`net`) is shared whole: received and uploaded by the defaults
    kept = ClientMethod.unshared  # the personal head and the BatchNorm statistics

    def loss(self, model: RoDModel, x: torch.Tensor, y: torch.Tensor,
             log_counts: torch.Tensor) -> Terms:
        """BSM for the body and generic head plus the personal CE for the personal head."""
        h = model.features(x)
        generic = model.generic(h)
        bsm = balanced_softmax_loss(generic, y, log_counts)
        personal = F.cross_entropy(generic.detach() + model.personal(h.detach()), y)
        return Terms(bsm + personal, {"bsm-loss": bsm, "personal-loss": personal})

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        data = self.env.data
        log_counts = log_class_counts(data.y_train, data.num_classes).to(self.env.device)
        optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr)  # personal included
        stats = self.train_model(
            self.model, optimizer, version,
            loss_fn=lambda model, x, y: self.loss(model, x, y, log_counts))
        return self.result(self.upload(), stats, loss="bsm-loss", with_terms=True)

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        self.receive(global_arrays, version)  # the generic model; the personal head initial
        if epochs:
            # the personal head alone learns, on the summed output: with the rest frozen its
            # gradient is that of the personal loss of training
            personal = [n for n, _ in self.model.named_parameters() if n.startswith("personal.")]
            with only_trainable(self.model, personal) as trainable:
                optimizer = torch.optim.SGD(trainable.values(), lr=self.lr)
                self.train_model(self.model, optimizer, version, purpose=LATE, epochs=epochs)
        return self.evaluate(version)


register_method("fedrod", FedRoDSettings, FedRoDClient)
