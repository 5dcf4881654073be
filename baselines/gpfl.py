"""GPFL (Zhang, Hua, Wang, Song, Xue, Ma, Cao and Guan, "GPFL: Simultaneously Learning Global and
Personalized Feature Information for Personalized Federated Learning", ICCV 2023).

Each client's model is split, through the project's layer notion, into a feature extractor
(every layer but the head) and the head (the last layer, a Linear): f = features(x) of width K.
Two modules are added, shared by all clients:
  - the Conditional Valve (CoV): two sub-modules CoV_gamma and CoV_beta, each
    Linear(K, K) -> ReLU -> LayerNorm(K), that map a conditional input c to gamma and beta;
    the transformed feature is ReLU((gamma + 1) * f + beta) (Eq. 3-4),
  - the Global Category Embedding layer (GCE): a table C of one K-vector per class (U rows).
The client holds:
  - the feature extractor, CoV and GCE (received from the server each round, trained locally,
    uploaded),
  - a frozen copy C^ of the received GCE table (never trained, never uploaded),
  - the personal head (starts as the initial model's head; never leaves the client),
  - two conditional inputs, set from C^ whenever a new global model arrives (paper,
    Algorithm 1, line 8) and kept with the head:
        generic       g   = sum_u C^_u / U                (Eq. 5, the same on every client)
        personalized  p_i = sum_u alpha_i^u C^_u / U      (Eq. 7)
    alpha_i^u being the share of class u among the client's training labels (Eq. 6, never
    sent: it would tell the server the client's label distribution).

From one pass of the extractor, CoV makes a personalized feature f^P = CoV(f, p_i) and a
generic one f^G = CoV(f, g); the conditional input is one vector for the whole batch, so CoV
costs two small matrix-vector products per step. Local loss (Eq. 11):

    CE(head(f^P), y)                                  personalized task (Eq. 10)
  + CE(cos(f^G, C_u) over u, y)                       angle-level guidance (Eq. 8)
  + lam * mean_batch ||f^G - C^_y||_2                 magnitude-level guidance (Eq. 9)
  + mu * (||V||_2 + ||C||_2)                          V: every CoV parameter, C: the GCE table

Extractor, CoV, GCE and head are trained together by one SGD at the run's rate (local_epochs,
batch_size). Upload: the extractor, CoV and GCE; the server takes the sample-weighted mean of
each (the paper's Algorithm 1, lines 15-18; the reference code averages the GCE exactly as
the rest). Evaluation runs the personalized route only, head(CoV(f, p_i)), as the paper and
the reference code do. Each term is reported as a train metric (unweighted): ce-loss,
angle-loss, magnitude-loss and norm-reg (= ||V||_2 + ||C||_2, reported also when mu = 0).

Where the reference code (PFLlib's clientgpfl.py / servergpfl.py and the authors' own
release) departs from the paper, the paper is followed:
  - the conditional inputs: the reference starts them at zero (round 0's evaluation and round
    1's training run without them) and later computes them from the client's own GCE as it
    was before the new global one overwrites it; here they come from the received global
    table C^ each time a new global model arrives, as Algorithm 1 says;
  - Eq. 7 divides p_i by U; the reference does not;
  - the magnitude term: the reference takes the norm of the whole batch's difference matrix
    (which grows with the batch size); here it is the mean over the samples of each one's
    distance (Eq. 9 is per sample, Eq. 1 takes its expectation);
  - the regularizer: the reference has none in the loss but gives the CoV and GCE optimizers a
    weight decay of mu (the gradient of (mu / 2) ||.||^2); here it is the loss term
    mu * (||V||_2 + ||C||_2) of Eq. 11 (so the reported train loss is the whole objective).
The reference's separate train-loss pass is not made: train-loss is the training objective's
mean over the local steps, as for every method here.

A client that arrives late (`new_clients`) takes in the extractor, CoV and GCE, sets its
conditional inputs from the received table and its own label shares, starts from the initial
head, trains on GPFL's local loss for `new_client_epochs` epochs and is evaluated on the
personalized route.

Settings (conf/strategy/gpfl.yaml):
  lam  lambda, weight of the magnitude-level guidance; default 0.01, the authors' run script for
       the 4-layer CNN (`-lam 0.01`; MNIST Dir(0.1), 20 clients, batch 10, much like the
       default setup here; 1e-4 for ResNet-18 and fastText). PFLlib's main.py default, 1.0, is
       the `-lam` it shares among several methods; with it the magnitude term (about 25 at the
       start: the N(0, 1) embeddings have norm ~sqrt(K)) slows the first rounds: the tests'
       3-client run (tests/conftest.py `small`) is at 21% after two rounds, 33% with 0.01
  mu   weight of the CoV and GCE norms; default 0.1, the same script's value for the 4-layer
       CNN (there a weight decay; PFLlib's main.py default 0 switches the term off, as the
       authors' script does for ResNet-18 and fastText)
The CoV's width and the GCE's embedding width are the feature width K, its rows the head's
classes U (fixed, as in the paper). CoV and GCE start from the same seeded initialization on
the server and every client (PyTorch's defaults: the GCE table N(0, 1)).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.settings.gpfl import GPFLSettings
from flayer.config.schema import Config
from flayer.nn.layers import LayerMap, features
from flayer.nn.training import EvalResult, Terms
from flayer.protocol.client import LATE, ClientEnv, ClientMethod, FitResult
from flayer.protocol.method import register_method
from flayer.protocol.server import MethodServer
from flayer.util.seeding import derive_seed

COV_PREFIX = "gpfl.cov."  # the CoV's arrays in the global model and the upload
GCE_PREFIX = "gpfl.gce."  # the GCE table ("gpfl.gce.weight")


class ConditionalValve(nn.Module):
    """CoV: gamma and beta from a conditional input, then ReLU((gamma + 1) * f + beta)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.gamma = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.LayerNorm(width))
        self.beta = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.LayerNorm(width))

    def forward(self, f: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return F.relu(f * (self.gamma(condition) + 1) + self.beta(condition))


def build_modules(cfg: Config, width: int, classes: int) -> tuple[ConditionalValve, nn.Embedding]:
    """CoV and GCE, initialized identically on the server and every client."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "gpfl-modules"))
        return ConditionalValve(width), nn.Embedding(classes, width)


def conditional_inputs(table: torch.Tensor, proportions: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, p_i) of Eq. 5 and 7 from the frozen category embeddings (U x K) and the client's
    class proportions (U)."""
    classes = table.shape[0]
    return table.mean(dim=0), proportions @ table / classes


def angle_loss(f_g: torch.Tensor, table: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 8: cross-entropy of the cosine similarities of f^G to every category embedding."""
    return F.cross_entropy(F.normalize(f_g, dim=1) @ F.normalize(table, dim=1).T, y)


def magnitude_loss(f_g: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 9 averaged over the batch: each sample's L2 distance to its frozen embedding."""
    return torch.linalg.vector_norm(f_g - targets, dim=1).mean()


def l2_norm(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """||.||_2 of all the tensors taken as one vector."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p) for p in params]))


class GPFLModel(nn.Module):
    """A client's whole GPFL model. `forward` is the personalized route, so the common
    evaluation loop applies."""

    def __init__(self, net: nn.Module, layers: LayerMap, cov: ConditionalValve,
                 gce: nn.Embedding) -> None:
        super().__init__()
        self.layers = layers
        self.net = net  # extractor + personal head
        self.cov = cov
        self.gce = gce
        # the received GCE table, frozen for the round (set from every global model: not kept)
        self.register_buffer("gce_frozen", gce.weight.detach().clone(), persistent=False)
        width = gce.embedding_dim
        self.register_buffer("generic_input", torch.zeros(width))
        self.register_buffer("personal_input", torch.zeros(width))

    @property
    def head(self) -> nn.Linear:
        return self.layers.head_module(self.net)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return features(self.net, self.layers, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.cov(self.features(x), self.personal_input))

    def norms(self) -> torch.Tensor:
        """||V||_2 + ||C||_2."""
        return l2_norm(self.cov.parameters()) + l2_norm(self.gce.parameters())

    # ---- what a new global model sets ---------------------------------------------------
    @torch.no_grad()
    def freeze_table(self) -> None:
        """C^: the received GCE table, fixed until the next global model."""
        self.gce_frozen.copy_(self.gce.weight)

    @torch.no_grad()
    def set_inputs(self, proportions: torch.Tensor) -> None:
        generic, personal = conditional_inputs(self.gce_frozen, proportions)
        self.generic_input.copy_(generic)
        self.personal_input.copy_(personal)


class GPFLClient(ClientMethod):
    settings: GPFLSettings
    model: GPFLModel
    # train-loss is the objective; these are its terms, unweighted
    train_metrics = ("ce-loss", "angle-loss", "magnitude-loss", "norm-reg")

    def __init__(self, env: ClientEnv, model: nn.Module) -> None:
        super().__init__(env, model)
        width = env.layers.feature_width(model)
        cov, gce = build_modules(self.cfg, width, env.layers.head_module(model).out_features)
        self.model = GPFLModel(model, env.layers, cov, gce).to(env.device)

    @classmethod
    def shares(cls, settings: GPFLSettings, layers: LayerMap) -> tuple[str, ...]:
        return layers.body_params  # the extractor; the head is personal

    def modules(self) -> dict[str, nn.Module]:
        return {COV_PREFIX: self.model.cov, GCE_PREFIX: self.model.gce}

    # the personal head, the conditional inputs and the BatchNorm statistics
    kept = ClientMethod.unshared

    def proportions(self) -> torch.Tensor:
        """alpha_i (Eq. 6): the share of each class among the client's training labels."""
        y = self.env.data.y_train
        counts = torch.bincount(y, minlength=self.model.gce.num_embeddings).float()
        return (counts / max(len(y), 1)).to(self.env.device)

    def receive(self, global_arrays: dict[str, np.ndarray], version: int) -> None:
        super().receive(global_arrays, version)  # the extractor, CoV and GCE
        self.model.freeze_table()
        self.model.set_inputs(self.proportions())

    def reload(self, global_arrays: dict[str, np.ndarray]) -> None:
        super().reload(global_arrays)
        self.model.freeze_table()  # the inputs stay as the last receive set them

    def loss(self, model: GPFLModel, x: torch.Tensor, y: torch.Tensor) -> Terms:
        f = model.features(x)
        ce = F.cross_entropy(model.head(model.cov(f, model.personal_input)), y)
        f_g = model.cov(f, model.generic_input)
        angle = angle_loss(f_g, model.gce.weight, y)
        magnitude = magnitude_loss(f_g, model.gce_frozen[y])
        total = ce + angle + self.settings.lam * magnitude
        if self.settings.mu > 0:
            norms = model.norms()
            total = total + self.settings.mu * norms
        else:
            with torch.no_grad():
                norms = model.norms()
        return Terms(total, {"ce-loss": ce, "angle-loss": angle, "magnitude-loss": magnitude,
                             "norm-reg": norms})

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr)
        stats = self.train_model(self.model, optimizer, version, loss_fn=self.loss)
        return self.result(self.upload(), stats, with_terms=True)

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        # the extractor, CoV and GCE, and the conditional inputs from the received table; the
        # head is the initial one
        self.receive(global_arrays, version)
        if epochs:
            optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr)
            self.train_model(self.model, optimizer, version, purpose=LATE, epochs=epochs,
                             loss_fn=self.loss)
        return self.evaluate(version)


class GPFLServer(MethodServer):
    """Holds the extractor, CoV and GCE (never a head); clients upload all three in full and
    the default sample-weighted mean aggregates them."""

    settings: GPFLSettings

    def modules(self, model: nn.Module) -> dict[str, nn.Module]:
        classes = self.layers.head_module(model).out_features
        cov, gce = build_modules(self.cfg, self.layers.feature_width(model), classes)
        return {COV_PREFIX: cov, GCE_PREFIX: gce}


register_method("gpfl", GPFLSettings, GPFLClient, GPFLServer)
