"""FedProto (Tan, Long, Liu, Zhou, Lu, Jiang and Zhang, "FedProto: Federated Prototype Learning
across Heterogeneous Clients", AAAI 2022): clients exchange class prototypes, never models.

The feature f(x) is the head's input (the project's layer notion, `flayer.nn.layers`). Each client
keeps its whole model; nothing of it ever travels. The server holds one global prototype per
class (the mean feature of the class over the clients' data) and a per-class flag saying
whether the class has one yet; both go to the clients with every message.

Local training (E epochs, `local_epochs`, plain SGD at the run's rate on the whole model):

    CE(head(f(x)), y) + lamda * mean over the batch and the feature dims of
                                [y has a global prototype] * (f(x) - C_y)^2,

C_y the global prototype of the sample's class: PFLlib's mean squared error (`nn.MSELoss`
between the batch's features and their class prototypes, a sample whose class has no prototype
counting as a zero term). The paper's regularizer is a distance between the local
representations and the global prototypes; the mean over samples and feature dims is the scale
PFLlib's default `lamda` goes with, so we keep it. In the first round there are no prototypes
and the loss is the CE alone. The train metrics are `ce-loss` and `proto-reg` (unweighted).

Upload: after training, one pass over the client's training data with the trained model in
eval mode (BatchNorm statistics as at evaluation, no gradient) gives per class j the feature
sum S_j and the count n_j; the local prototype S_j / n_j is the paper's definition (the mean
feature of the client's samples of class j under its local model). PFLlib instead averages the
features seen during training (train mode, every local epoch, each from the model before that
batch's step; its after-training `collect_protos` pass is there but commented out); we follow
the paper's definition at the cost of one no-gradient pass over the training data per round.

Server: the global prototype of class j is the mean of the clients' local prototypes weighted
by their sample counts of j, sum_i S_ij / sum_i n_ij (the paper's weighting; PFLlib averages
the clients' prototypes uniformly). To fit the weighted-sum contract (weight n_i, the client's
training samples), a client uploads S_ij / n_i and n_ij / n_i for every class as two full
tensors (zero for classes it lacks): the sums of weight times upload are sum_i S_ij and
sum_i n_ij (exactly, but for the float32 rounding of the upload), whose ratio is the global
prototype. Upload bytes: (classes x feature width +
classes) floats, far below a model. A class that no client of the round holds keeps its
previous prototype (PFLlib rebuilds the prototypes from each round's uploads alone, so with
partial participation a class can vanish for a round); a class no client has ever held has no
prototype.

Evaluation (the client's own model on its test data): the prediction is the class of the
nearest global prototype to f(x), as in the paper and PFLlib; the distance is PFLlib's mean
squared difference over the feature dims. Classes without a global prototype are never
predicted. Loss and AUC come from logits = -distance, an absent class getting the sample's
lowest logit minus `ABSENT_GAP` (so it is never the argmax and the loss stays finite). Before
any prototype exists (round 0) the client is evaluated with its model's own head (PFLlib
reports accuracy 0 there, evaluating nothing).

A client that arrives late (`new_clients`) receives only the global prototypes; its model is
the run's initial one, trained for `new_client_epochs` epochs on the cross-entropy plus the
pull of its features toward the global prototypes, so that its own classes' features settle
where the federation's prototypes are. It is evaluated as every client is, by the nearest
global prototype (no epochs: the initial model's features).

Settings (conf/strategy/fedproto.yaml):
  lamda  weight of the prototype regularizer; default 1.0 (PFLlib main.py `-lam/--lamda`)
Needs a Linear head after a body (`require_linear_head`): the feature is the head's input.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.settings.fedproto import FedProtoSettings
from flayer.nn.layers import features
from flayer.nn.training import EvalResult, Terms, batches
from flayer.protocol.aggregation import WeightedSum
from flayer.protocol.client import LATE, ClientEnv, ClientMethod, FitResult
from flayer.protocol.method import register_method
from flayer.protocol.server import MethodServer
from flayer.protocol.upload import TensorSpec, Upload, UploadSpec

PROTOTYPES = "fedproto.prototypes"  # server: global prototype per class (classes x width)
PRESENT = "fedproto.present"  # server: 1 where the class has a global prototype, else 0
SUMS = "fedproto.sums"  # upload: per-class feature sums / the client's training samples
COUNTS = "fedproto.counts"  # upload: per-class sample counts / the client's training samples
ABSENT_GAP = 20.0  # an absent class's logit: this far below the sample's lowest present one
PASS_BATCH = 512  # batch size of the no-gradient prototype pass


def prototype_regularizer(h: torch.Tensor, y: torch.Tensor, prototypes: torch.Tensor,
                          present: torch.Tensor) -> torch.Tensor:
    """Mean over samples and feature dims of (h - C_y)^2, zero for samples whose class has
    no prototype (they still count in the mean, as in PFLlib's MSELoss)."""
    mask = present[y].to(h.dtype).unsqueeze(1)
    return ((h - prototypes[y]) * mask).pow(2).mean()


def prototype_distances(h: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over the feature dims between each row of h and each
    prototype (samples x classes)."""
    d2 = ((h * h).sum(1, keepdim=True) + (prototypes * prototypes).sum(1)
          - 2.0 * h @ prototypes.T)
    return d2.clamp_min(0.0) / h.shape[1]


def prototype_logits(h: torch.Tensor, prototypes: torch.Tensor,
                     present: torch.Tensor) -> torch.Tensor:
    """-distance to each present prototype; an absent class sits ABSENT_GAP below the
    sample's lowest present logit, so the argmax is the nearest present prototype."""
    logits = -prototype_distances(h, prototypes)
    lowest = logits.masked_fill(~present, math.inf).amin(1, keepdim=True)
    return torch.where(present, logits, lowest - ABSENT_GAP)


def prototype_upload(sums: np.ndarray, counts: np.ndarray, num_examples: int
                     ) -> dict[str, np.ndarray]:
    """A client's upload for weight num_examples: per-class sums and counts over its weight,
    so that the weighted sums over clients are the plain sums."""
    return {SUMS: (sums / num_examples).astype(np.float32),
            COUNTS: (counts / num_examples).astype(np.float32)}


def global_prototypes(total: WeightedSum, previous: dict[str, np.ndarray]
                      ) -> dict[str, np.ndarray]:
    """sum_i S_ij / sum_i n_ij for every class some client of the round holds; the others
    keep their previous prototype and flag."""
    # num = sum_i n_i * (x_i / n_i) = sum_i x_i for both tensors (same weights: they cancel)
    sums, counts = total.num[SUMS], total.num[COUNTS]
    seen = counts > 0
    prototypes = previous[PROTOTYPES].copy()
    prototypes[seen] = (sums[seen] / counts[seen, None]).astype(prototypes.dtype)
    present = np.where(seen, 1.0, previous[PRESENT]).astype(previous[PRESENT].dtype)
    return {PROTOTYPES: prototypes, PRESENT: present}


class FedProtoClient(ClientMethod):
    """Keeps its whole model (the default `kept`); takes in the global prototypes, trains
    with the regularizer, uploads per-class feature sums and counts."""

    settings: FedProtoSettings
    # train-loss is the objective; these are its cross-entropy and the (unweighted) regularizer
    train_metrics = ("ce-loss", "proto-reg")

    def __init__(self, env: ClientEnv, model: nn.Module) -> None:
        super().__init__(env, model)
        self.prototypes: torch.Tensor | None = None
        self.present: torch.Tensor | None = None

    def receive(self, global_arrays: dict[str, np.ndarray], version: int) -> None:
        self.reload(global_arrays)

    def reload(self, global_arrays: dict[str, np.ndarray]) -> None:
        # the model is the client's own: only the prototypes come from the server
        device = self.env.device
        self.prototypes = torch.as_tensor(global_arrays[PROTOTYPES], device=device)
        self.present = torch.as_tensor(global_arrays[PRESENT] > 0, device=device)

    def received(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prototypes is None or self.present is None:
            raise RuntimeError("FedProto: no global prototypes were received")
        return self.prototypes, self.present

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Terms:
        layers = self.env.layers
        prototypes, present = self.received()
        h = features(model, layers, x)
        ce = F.cross_entropy(layers.head_module(model)(h), y)
        regularizer = prototype_regularizer(h, y, prototypes, present)
        return Terms(ce + self.settings.lamda * regularizer,
                     {"ce-loss": ce, "proto-reg": regularizer})

    @torch.no_grad()
    def class_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class, the sum of the trained model's features (eval mode) over the client's
        training samples of the class, and their number."""
        data, layers, device = self.env.data, self.env.layers, self.env.device
        self.model.eval()
        width = layers.feature_width(self.model)
        sums = torch.zeros(data.num_classes, width, dtype=torch.float64, device=device)
        for idx in batches(data.num_train, PASS_BATCH, None):
            y = data.y_train[idx].to(device)
            h = features(self.model, layers, data.to_input(data.x_train[idx]).to(device))
            sums.index_add_(0, y, h.to(torch.float64))
        counts = torch.bincount(data.y_train, minlength=data.num_classes)
        return sums.cpu().numpy(), counts.numpy().astype(np.float64)

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        stats = self.train_model(self.model, self.optimizer(self.model), version,
                                 loss_fn=self.loss)
        sums, counts = self.class_sums()
        n = self.env.data.num_train
        return FitResult(Upload(arrays=prototype_upload(sums, counts, n)), n, stats.mean_loss,
                         metrics=stats.mean_terms())

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        self.receive(global_arrays, version)  # the prototypes; its model is the initial one
        if epochs:
            self.train_model(self.model, self.optimizer(self.model), version, purpose=LATE,
                             epochs=epochs, loss_fn=self.loss)
        return self.evaluate(version)

    def evaluate(self, version: int) -> tuple[EvalResult, dict[str, float]]:
        prototypes, present = self.received()
        if not bool(present.any()):  # no prototype yet (round 0): the model's own head
            return super().evaluate(version)
        layers = self.env.layers

        def nearest(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
            return prototype_logits(features(model, layers, x), prototypes, present)

        data = self.env.data
        return self.evaluate_on(data.x_test, data.y_test, forward=nearest), {}


class FedProtoServer(MethodServer):
    """Holds the global prototypes and their flags, no model; asks each client for its
    per-class feature sums and counts (over its weight) and turns their sums into the
    class-count-weighted global prototypes."""

    settings: FedProtoSettings

    def initial_global(self, model: nn.Module) -> dict[str, np.ndarray]:
        head = self.layers.head_module(model)
        classes, width = head.out_features, self.layers.feature_width(model)
        return {PROTOTYPES: np.zeros((classes, width), dtype=np.float32),
                PRESENT: np.zeros(classes, dtype=np.float32)}

    def upload_spec(self, global_arrays: dict[str, np.ndarray]) -> UploadSpec:
        classes, width = global_arrays[PROTOTYPES].shape
        return {SUMS: TensorSpec((classes, width)), COUNTS: TensorSpec((classes,))}

    def aggregate_sums(self, total: WeightedSum, previous: dict[str, np.ndarray]
                       ) -> dict[str, np.ndarray]:
        return global_prototypes(total, previous)


register_method("fedproto", FedProtoSettings, FedProtoClient, FedProtoServer)
