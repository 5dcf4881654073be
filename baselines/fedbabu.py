"""FedBABU (Oh, Kim and Yun, "FedBABU: Towards Enhanced Representation for Federated Image
Classification", ICLR 2022): federated training of the body only, with the head frozen at
its initial values; the head is fine-tuned for personalization at evaluation.

Split by the project's layer notion (`flayer.nn.layers.LayerMap`): the head is the last layer,
the body every other layer (FedPer's `body_names`). The head is never trained during
federated training: it stays at the run's initial values, identical on every client (the
run's initial model is seeded), so it needs no storage and never travels. The server holds,
sends and averages only the body.

Local update: a client loads the received body, trains the body only (the head gets no
gradient) for E epochs (`local_epochs`) of plain SGD at the run's learning rate and uploads
the body; the server takes the sample-weighted mean. BatchNorm statistics (buffers) stay on
the client, as for every method; nothing else is kept.

Evaluation (every evaluated round, every evaluated client, round 0 included): a COPY of the
head is fine-tuned on the client's training data for `fine_tuning_epochs` epochs of plain SGD
at the run's learning rate and batch size, with the body frozen, then the model with the
fine-tuned head is evaluated on the client's test data. The copy is then dropped: the
client's stored state is unchanged, and the next evaluation fine-tunes again from the initial
head on the body of that round (the paper personalizes the global model anew at evaluation;
its federated head is the fixed initial one). With the body frozen, the body's features of
the training data are computed once per evaluation (body in eval mode, no gradient) and the
head is fine-tuned on them in shuffled batches (seeded: run seed, client, model version).
For a body without BatchNorm or dropout (the CNN, fastText) this is fine-tuning the head
through the frozen model, batch for batch (up to float rounding; test); for a body with
BatchNorm (ResNet-18) the statistics stay fixed (the client's running statistics, those the
evaluation uses) while the head is fine-tuned, where a pass in train mode would normalize by
batch statistics and update them.
Ten epochs through the whole model per client per evaluation would cost several times a
training round; this costs one forward pass of the body over the training data plus the head's
steps (on one CPU thread, 2,000 samples, batch 10, ten epochs: about 1.6 s and 2.5 s, against
5.9 s for one local epoch of the CNN; the head's steps are many and tiny).

A client that arrives late (`new_clients`) puts the run's initial head on the received body; its
personalization is the head fine-tuning every evaluation does (body frozen, on a copy), for
`new_client_epochs` epochs in place of `fine_tuning_epochs` (no epochs: the initial head).

Settings (conf/strategy/fedbabu.yaml):
  fine_tuning_epochs  epochs of head fine-tuning before each evaluation; default 10 (PFLlib's
                      `fine_tuning_epochs`). 0 evaluates the model as trained: the global body
                      with the initial head.

Where PFLlib departs from the paper, we follow the paper:
  - PFLlib fine-tunes the whole model (body and head), and only once, after the last round,
    keeping the fine-tuned model; its per-round accuracy is that of the global body with the
    initial head. Here, following the paper's description of the method (the head is
    fine-tuned for personalization during the evaluation process), every evaluation
    fine-tunes the head only, body frozen, on a copy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from baselines.fedper import body_names
from baselines.settings.fedbabu import FedBABUSettings
from flayer.nn.layers import LayerMap, features
from flayer.nn.training import EvalResult, TrainStats, batches, only_trainable, train
from flayer.protocol.client import ClientMethod, FitResult
from flayer.protocol.method import register_method

FEATURE_BATCH = 128  # samples per forward pass for the features (faster than 512 on the CPU)


@dataclass(frozen=True)
class FeatureSet:
    """A client's training set as the frozen body sees it: the part of ClientData that the
    one training loop (`flayer.nn.training.train`) reads, with features as its inputs."""

    x_train: torch.Tensor  # features, one row per training sample
    y_train: torch.Tensor

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FedBABUClient(ClientMethod):
    """Trains and uploads the body; the head stays the initial one and is fine-tuned on a copy
    for each evaluation."""

    settings: FedBABUSettings

    @classmethod
    def shares(cls, settings: FedBABUSettings, layers: LayerMap) -> tuple[str, ...]:
        return body_names(layers)

    def kept(self) -> set[str]:
        # the body comes from every global model, the head is the run's initial one
        return self.buffers()

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        with only_trainable(self.model, self.shared) as trainable:
            optimizer = torch.optim.SGD(trainable.values(), lr=self.lr)
            stats = self.train_model(self.model, optimizer, version)
        return self.result(self.upload(), stats)

    # ---- evaluation: fine-tune a copy of the head ------------------------------------------
    @torch.no_grad()
    def train_features(self) -> torch.Tensor:
        """The body's features of every training sample, body in eval mode."""
        data, device = self.env.data, self.env.device
        self.model.eval()
        parts = [features(self.model, self.env.layers,
                          data.to_input(data.x_train[idx]).to(device))
                 for idx in batches(data.num_train, FEATURE_BATCH, None)]
        return torch.cat(parts)

    def fine_tuned_head(self, version: int, epochs: int | None = None
                        ) -> tuple[nn.Module, TrainStats]:
        """A copy of the head after `epochs` (`fine_tuning_epochs` unless given) epochs of
        SGD on the training data's features (the model itself is not touched)."""
        head = copy.deepcopy(self.env.layers.head_module(self.model))
        for p in head.parameters():
            p.requires_grad_(True)
        data = self.env.data
        view = FeatureSet(self.train_features(), data.y_train.to(self.env.device))
        stats = train(head, torch.optim.SGD(head.parameters(), lr=self.lr),
                      view,  # duck-typed: the part of ClientData that train reads
                      epochs=self.settings.fine_tuning_epochs if epochs is None else epochs,
                      batch_size=self.cfg.batch_size,
                      generator=self.generator("fine-tune", version), device=self.env.device)
        return head, stats

    def evaluate(self, version: int) -> tuple[EvalResult, dict[str, float]]:
        return self.evaluate_tuned(version, self.settings.fine_tuning_epochs)

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        self.receive(global_arrays, version)  # the body; the head is the initial one
        return self.evaluate_tuned(version, epochs)

    def evaluate_tuned(self, version: int, epochs: int) -> tuple[EvalResult, dict[str, float]]:
        """The model with a copy of its head fine-tuned for `epochs` epochs, body frozen."""
        data = self.env.data
        if epochs == 0 or data.num_train == 0:
            return super().evaluate(version)
        head, _ = self.fine_tuned_head(version, epochs)
        layers = self.env.layers

        def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
            return head(features(model, layers, x))

        return self.evaluate_on(data.x_test, data.y_test, forward=forward), {}


register_method("fedbabu", FedBABUSettings, FedBABUClient)
