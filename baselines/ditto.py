"""Ditto (Li, Hu, Beirami and Smith, "Ditto: Fair and Robust Federated Learning Through
Personalization", ICML 2021).

Each client keeps two models. The global copy w is trained exactly as FedAvg trains it (from
the received global model, `local_epochs` epochs of SGD), uploaded whole and averaged by the
server (sample-weighted mean). Next to it the client keeps a full personal model v that never
leaves it: v starts as a copy of the first global model the client receives and, in every
round the client trains, takes `personal_epochs` epochs of SGD on

    CE(v) + (lam / 2) * ||v - w_received||^2,

where w_received is the global model of that round (PFLlib: `ptrain` runs before `train`, with
the model still holding the received global). v is the model the client evaluates and keeps.

A client that arrives late (`new_clients`) starts v as the received global model and trains it
for `new_client_epochs` epochs with the proximal pull toward that model (v's training; w is not
trained, nothing goes up); it is evaluated with v.

Settings (conf/strategy/ditto.yaml):
  lam              lambda, the proximal weight pulling v toward the received global model;
                   default 0.1 (PFLlib's `mu`; note PFLlib's command-line default mu = 0
                   turns Ditto into purely local training of v)
  personal_epochs  epochs of v's training per round; default 1 (PFLlib `plocal_epochs`)

The proximal term is added to v's gradients as lam * (v - w_received) after the
cross-entropy backward pass, as PFLlib's perturbed gradient descent does; with lr * lam = 1 and
no cross-entropy gradient one SGD step therefore lands v exactly on w_received.

A training reply's train loss is w's (FedAvg's, over its local epochs); v's mean loss goes
with it as the metric `personal-loss`.

BatchNorm statistics stay local for both models: v's live in the model state, w's in the
client's extra arrays (`w/<buffer name>`), so each model keeps its own running statistics.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from baselines.settings.ditto import DittoSettings
from flayer.nn.models import build_model
from flayer.nn.params import load_params, shared_params
from flayer.nn.training import EvalResult, cross_entropy, proximal_pull
from flayer.protocol.client import LATE, ClientMethod, FitResult
from flayer.protocol.method import register_method
from flayer.protocol.upload import Upload

W_BUFFER = "w/"  # prefix of the global copy's BatchNorm buffers in the client's extra arrays
INITIALIZED = "ditto_initialized"  # meta flag: v has been set from a global model


class DittoClient(ClientMethod):
    """`self.model` is the personal model v (evaluated and stored); w is rebuilt per round."""

    train_metrics = ("personal-loss",)  # v's; train-loss is w's
    settings: DittoSettings

    def receive(self, global_arrays: dict[str, np.ndarray], version: int) -> None:
        # v starts as the first global model; later global models only reach v through the
        # proximal term while training.
        if not self.meta.get(INITIALIZED, False):
            load_params(self.model, global_arrays)
            self.meta[INITIALIZED] = True

    def personal_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """v's data loss (the proximal term is added to its gradients separately)."""
        return cross_entropy(model, x, y)

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        personal = self.train_personal(global_arrays, version)
        w = self.global_copy(global_arrays)
        stats = self.train_model(w, self.optimizer(w), version)
        self.extra.update({W_BUFFER + n: b.detach().cpu().numpy().copy()
                           for n, b in w.named_buffers()})
        return self.result(Upload(arrays=shared_params(w)), stats,
                           metrics={"personal-loss": personal})

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        self.receive(global_arrays, version)  # v starts as the global model
        if epochs:
            self.train_personal(global_arrays, version, epochs=epochs, purpose=LATE)
        return self.evaluate(version)

    def train_personal(self, global_arrays: dict[str, np.ndarray], version: int, *,
                       epochs: int | None = None, purpose: str = "personal") -> float:
        """`personal_epochs` (unless given) of SGD on v with the proximal pull toward
        w_received."""
        lam = self.settings.lam
        proximal = proximal_pull(self.model, global_arrays, lam, self.env.device)
        stats = self.train_model(self.model, self.optimizer(self.model), version,
                                 purpose=purpose,
                                 epochs=self.settings.personal_epochs if epochs is None
                                 else epochs,
                                 loss_fn=self.personal_loss,
                                 before_step=proximal if lam > 0 else None)
        return stats.mean_loss

    def global_copy(self, global_arrays: dict[str, np.ndarray]) -> nn.Module:
        """w: the received global parameters with this client's own BatchNorm statistics."""
        data = self.env.data
        w = build_model(self.cfg, data.source.spec).to(self.env.device)
        load_params(w, global_arrays)
        with torch.no_grad():
            for name, buf in w.named_buffers():
                stored = self.extra.get(W_BUFFER + name)
                if stored is not None:
                    buf.copy_(torch.tensor(stored))
        return w


register_method("ditto", DittoSettings, DittoClient)
