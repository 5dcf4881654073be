"""FedCP (Zhang, Hua, Wang, Song, Xue, Ma and Guan, "FedCP: Separating Feature Information for
Personalized Federated Learning via Conditional Policy", KDD 2023).

Each client's model is split, through the project's layer notion, into a feature extractor
(every layer but the head) and the head (the last layer, a Linear). The client holds:
  - the feature extractor (received from the server each round, then trained locally),
  - a personal head (starts as the initial model's head; never leaves the client),
  - a copy of the global head (received; frozen during local training),
  - a copy of the received global feature extractor (frozen; only for the MMD term),
  - the conditional policy network (CPN; received and trained locally),
  - a client context c = the personal head's weight summed over classes (a vector of the
    feature width), recomputed from the personal head whenever a new global model arrives.

Per sample, the CPN reads h * normalize(c) and produces, through Linear(D, 2D) -> LayerNorm ->
ReLU and a Gumbel-softmax over the two halves, a policy r in (0, 1)^D. The feature h is split
into a global part h * r (to the global head) and a personal part h * (1 - r) (to the personal
head); the output is the sum of both heads. Local loss:

    CE(output, y) + lam * MMD(h, h_global),

h_global being the features of the received (frozen) global extractor on the same batch; MMD is
the biased estimate with a sum of Gaussian kernels exp(-d^2 / (2 a)), a in MMD_BANDWIDTHS (the
reference code's "rbf" kernel). The optimizer updates the extractor, the personal head and the
CPN; the global head and the extractor copy are frozen. Upload: the extractor, the CPN, and as
the global head the element-wise mean of the personal head and the received global head (under
the head's parameter names). The server takes the sample-weighted mean of each.

Gumbel noise is drawn in training and in evaluation, as in the reference code, from generators
seeded by the run seed, the client and the model version, so evaluations are reproducible.
Where the reference starts with a random context until a client's first training round, here
the context is derived from the personal head from the start (the paper's definition).

A client that arrives late (`new_clients`) takes in the extractor, the global head and the CPN,
with a fresh personal head (the initial one) and the context computed from it; it trains on
FedCP's local objective for `new_client_epochs` epochs and is evaluated as every client is
(with Gumbel noise).

Settings (conf/strategy/fedcp.yaml):
  lam  lambda, weight of the MMD term; default 1. The authors' run script uses 5 (`-lam 5`);
       on the default setup (Fashion-MNIST Dir(0.1), 20 rounds) 5 reaches 94.6% and 1 learns
       faster from the first round on (docs/results.md)
  tau  Gumbel-softmax temperature; default 1 (the reference code's value)
The CPN's width is the feature width (fixed, as in the paper).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.settings.fedcp import FedCPSettings
from flayer.config.schema import Config
from flayer.nn.layers import LayerMap, features
from flayer.nn.params import load_modules, shared_params, with_modules
from flayer.nn.training import EvalResult, Terms, TrainStats
from flayer.protocol.client import LATE, ClientEnv, ClientMethod, FitResult
from flayer.protocol.method import register_method
from flayer.protocol.server import MethodServer
from flayer.protocol.upload import Upload
from flayer.util.seeding import derive_seed

CPN_PREFIX = "fedcp.cpn."  # the CPN's arrays in the global model and the upload
MMD_BANDWIDTHS = (10.0, 15.0, 20.0, 50.0)  # the reference's Gaussian kernel bandwidths


def build_cpn(cfg: Config, width: int) -> nn.Module:
    """The CPN, initialized identically on the server and every client."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "fedcp-cpn"))
        return nn.Sequential(nn.Linear(width, 2 * width), nn.LayerNorm(2 * width), nn.ReLU())


def gaussian_kernel_sum(d2: torch.Tensor) -> torch.Tensor:
    return sum(torch.exp(-0.5 * d2 / a) for a in MMD_BANDWIDTHS)


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xx = (x * x).sum(1, keepdim=True)
    yy = (y * y).sum(1, keepdim=True)
    return (xx + yy.T - 2.0 * x @ y.T).clamp_min(0.0)


def mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Biased empirical MMD^2 between the rows of x and y (multi-bandwidth Gaussian kernel)."""
    return (gaussian_kernel_sum(squared_distances(x, x)).mean()
            + gaussian_kernel_sum(squared_distances(y, y)).mean()
            - 2.0 * gaussian_kernel_sum(squared_distances(x, y)).mean())


def gumbel_noise(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel samples, -log(E) with E ~ Exp(1), drawn on the CPU from `generator`."""
    return -torch.empty(shape).exponential_(generator=generator).log()


class FedCPModel(nn.Module):
    """A client's whole FedCP model. `forward` is the personalized prediction, so the common
    evaluation loop applies; its state_dict (all of it personal state) persists on the client.
    """

    def __init__(self, net: nn.Module, layers: LayerMap, cpn: nn.Module, tau: float) -> None:
        super().__init__()
        self.layers = layers
        self.tau = tau
        self.noise: torch.Generator | None = None  # Gumbel noise source; None: no noise
        self.net = net  # extractor + personal head
        self.cpn = cpn
        self.global_head = copy.deepcopy(layers.head_module(net))
        body = copy.deepcopy(net)
        setattr(body, layers.head.name, nn.Identity())
        self.global_body = body  # the received extractor, for the MMD term only
        for p in (*self.global_head.parameters(), *self.global_body.parameters()):
            p.requires_grad_(False)
        self.register_buffer("context", torch.zeros(layers.feature_width(net)))

    @property
    def personal_head(self) -> nn.Linear:
        return self.layers.head_module(self.net)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return features(self.net, self.layers, x)

    def policy(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample split (1 - r, r): the personal and the global share of each feature."""
        context = F.normalize(self.context, dim=0)
        z = self.cpn(h * context).view(h.shape[0], 2, -1)
        if self.noise is not None:
            z = z + gumbel_noise(z.shape, self.noise).to(z.device, z.dtype)
        s = torch.softmax(z / self.tau, dim=1)
        return s[:, 0], s[:, 1]

    def heads(self, h: torch.Tensor) -> torch.Tensor:
        personal, shared = self.policy(h)
        return self.personal_head(h * personal) + self.global_head(h * shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.features(x))

    # ---- exchange with the server -------------------------------------------------------
    def _head_names(self) -> dict[str, str]:
        """Global (model) parameter name -> name inside the head module."""
        prefix = self.layers.head.name + "."
        return {n: n[len(prefix):] for n in self.layers.head.params}

    @torch.no_grad()
    def load_global(self, arrays: dict[str, np.ndarray]) -> None:
        """The received extractor (into the model and its frozen copy) and global head."""
        net = dict(self.net.named_parameters())
        body = dict(self.global_body.named_parameters())
        for name in self.layers.body_params:
            value = torch.as_tensor(arrays[name])
            net[name].copy_(value)
            body[name].copy_(value)
        head = dict(self.global_head.named_parameters())
        for name, local in self._head_names().items():
            head[local].copy_(torch.as_tensor(arrays[name]))

    @torch.no_grad()
    def update_context(self) -> None:
        """The client context: the personal head's weight summed over the classes."""
        self.context.copy_(self.personal_head.weight.sum(dim=0))

    @torch.no_grad()
    def global_part(self) -> dict[str, np.ndarray]:
        """What goes up of the model: the extractor, and as the global head the mean of the
        personal and the received global head."""
        net = shared_params(self.net)
        arrays = {n: net[n] for n in self.layers.body_params}
        personal = dict(self.personal_head.named_parameters())
        shared = dict(self.global_head.named_parameters())
        for name, local in self._head_names().items():
            arrays[name] = (0.5 * (personal[local] + shared[local])).cpu().numpy()
        return arrays


class FedCPClient(ClientMethod):
    settings: FedCPSettings
    model: FedCPModel
    # train-loss is the objective; these are its cross-entropy and the (unweighted) MMD
    train_metrics = ("ce-loss", "mmd")

    def __init__(self, env: ClientEnv, model: nn.Module) -> None:
        super().__init__(env, model)
        cpn = build_cpn(self.cfg, env.layers.feature_width(model))
        self.model = FedCPModel(model, env.layers, cpn, self.settings.tau).to(env.device)

    def kept(self) -> set[str]:
        # The personal head and the context; the extractor, global head and CPN come from
        # every global model.
        head = {f"net.{name}" for name in self.env.layers.head.params}
        return head | {"context"} | self.buffers()

    def modules(self) -> dict[str, nn.Module]:
        return {CPN_PREFIX: self.model.cpn}

    def receive(self, global_arrays: dict[str, np.ndarray], version: int) -> None:
        # The personal head is kept; its (last trained) state sets the context.
        self.reload(global_arrays)
        self.model.update_context()

    def reload(self, global_arrays: dict[str, np.ndarray]) -> None:
        # the context stays as the last receive set it
        self.model.load_global(global_arrays)
        load_modules(self.modules(), global_arrays)

    def upload(self) -> Upload:
        return Upload(arrays=with_modules(self.model.global_part(), self.modules()))

    def loss(self, model: FedCPModel, x: torch.Tensor, y: torch.Tensor) -> Terms:
        h = model.features(x)
        ce = F.cross_entropy(model.heads(h), y)
        if self.settings.lam == 0:
            return Terms(ce, {"ce-loss": ce, "mmd": torch.zeros(())})
        with torch.no_grad():
            h_global = model.global_body(x)
        distance = mmd(h, h_global)
        return Terms(ce + self.settings.lam * distance, {"ce-loss": ce, "mmd": distance})

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        stats = self.train_local(version)
        return self.result(self.upload(), stats, with_terms=True)

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        # the extractor, global head and CPN; the personal head is the initial one, and the
        # context is set from it
        self.receive(global_arrays, version)
        if epochs:
            self.train_local(version, epochs=epochs, purpose=LATE)
        return self.evaluate(version)

    def train_local(self, version: int, *, epochs: int | None = None,
                    purpose: str = "train") -> TrainStats:
        """The local objective, with Gumbel noise: the extractor, personal head and CPN learn."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trainable, lr=self.lr)
        self.model.noise = self.generator("fedcp-gumbel", version)
        try:
            return self.train_model(self.model, optimizer, version, purpose=purpose,
                                    epochs=epochs, loss_fn=self.loss)
        finally:
            self.model.noise = None

    def evaluate(self, version: int) -> tuple[EvalResult, dict[str, float]]:
        self.model.noise = self.generator("fedcp-eval-gumbel", version)
        try:
            return self.evaluate_on(self.env.data.x_test, self.env.data.y_test), {}
        finally:
            self.model.noise = None


class FedCPServer(MethodServer):
    """Holds the extractor, the global head (under the head's names) and the CPN; clients
    upload all three in full and the default sample-weighted mean aggregates them."""

    settings: FedCPSettings

    def modules(self, model: nn.Module) -> dict[str, nn.Module]:
        return {CPN_PREFIX: build_cpn(self.cfg, self.layers.feature_width(model))}


register_method("fedcp", FedCPSettings, FedCPClient, FedCPServer)
