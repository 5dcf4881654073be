"""FedRep (Collins et al., "Exploiting Shared Representations for Personalized Federated
Learning", ICML 2021): a shared representation (body), a personal head, trained in turn.

The split and the server side are FedPer's (baselines/fedper.py): the server holds, sends and
averages only the body; the head never leaves the client. Each round a client loads the
received body into its own model (keeping its own head), then
  1. trains the head only (body frozen) for `head_epochs` epochs,
  2. trains the body only (head frozen) for E epochs (`local_epochs`),
both with plain SGD at the run's learning rate, each phase with its own shuffling seed, and
uploads the body. Frozen means no gradient step; BatchNorm running statistics (buffers, never
uploaded) still update in both phases, as in PFLlib. The reported train loss is the body
phase's (the E local epochs, as for every method); the head phase's is the `head-loss` metric.

A client that arrives late (`new_clients`) puts a fresh head (the run's initial one) on the
received body and trains the head alone, body frozen, for `new_client_epochs` epochs: the head
phase, as the paper's new clients learn only their head on the global representation.

Settings (conf/strategy/fedrep.yaml):
  head_epochs      epochs of the head phase, default 1 (PFLlib's
                   `plocal_epochs`); the FedRep paper uses 10.
  personal_layers  how many top layers form the personal head, default 1 (the classifier),
                   as in the paper; see FedPer.
"""

from __future__ import annotations

import numpy as np
import torch

from baselines.fedper import FedPerClient
from baselines.settings.fedrep import FedRepSettings
from flayer.nn.training import EvalResult, TrainStats, only_trainable
from flayer.protocol.client import LATE, FitResult
from flayer.protocol.method import register_method


class FedRepClient(FedPerClient):
    """FedPer's client with the local update split into a head phase and a body phase."""

    train_metrics = ("head-loss",)  # train-loss is the body phase's
    settings: FedRepSettings

    def train_head(self, version: int, *, epochs: int | None = None,
                   purpose: str = "head") -> TrainStats:
        """The head phase: the head alone learns (`head_epochs` epochs unless given)."""
        head = set(self.env.layers.param_names) - set(self.shared)
        with only_trainable(self.model, head) as trainable:
            optimizer = torch.optim.SGD(trainable.values(), lr=self.lr)
            return self.train_model(self.model, optimizer, version, purpose=purpose,
                                    epochs=self.settings.head_epochs if epochs is None
                                    else epochs)

    def train_body(self, version: int) -> TrainStats:
        with only_trainable(self.model, self.shared) as trainable:
            optimizer = torch.optim.SGD(trainable.values(), lr=self.lr)
            return self.train_model(self.model, optimizer, version, purpose="body",
                                    epochs=self.cfg.local_epochs)

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        head_stats = self.train_head(version)
        body_stats = self.train_body(version)
        return self.result(self.upload(), body_stats,
                           metrics={"head-loss": head_stats.mean_loss})

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        self.receive(global_arrays, version)  # the body; the head is the initial one
        if epochs:
            self.train_head(version, epochs=epochs, purpose=LATE)
        return self.evaluate(version)


register_method("fedrep", FedRepSettings, FedRepClient)
