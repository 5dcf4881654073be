"""APFL (Deng, Kamani and Mahdavi, "Adaptive Personalized Federated Learning",
arXiv 2003.13461, 2020): a personal model mixed with the global one by a learnt weight.

Each client keeps a local model v and a mixing weight alpha in [0, 1]; its personalized model
is the parameter mixture

    v_bar = alpha * v + (1 - alpha) * w,

where w is the global model. Every training batch makes three simultaneous SGD steps at the
run's learning rate, all from the same point and on the same batch (the paper's Algorithm 1
and its adaptive alpha):
  - w on its own cross-entropy, exactly as FedAvg trains it;
  - v on the cross-entropy of the mixed model, gradient taken w.r.t. v (= alpha times the
    mixed model's gradient; w is a constant in this term);
  - alpha on the same loss: d/d alpha = <v - w, grad f(v_bar)>, then clipped to [0, 1]
    (the projection onto the paper's constraint).
The mixed model's parameters are computed functionally from v, w and alpha for every batch;
no per-layer mixing of outputs. After local training the client uploads its trained w; the
server takes the sample-weighted mean (FedAvg). v, alpha and the BatchNorm statistics of both
models never leave the client (v's statistics serve the mixed model, which is the one that
runs through them). v starts as the run's initial model, as w does (the paper's
v^(0) = w^(0)); alpha starts at the `alpha` setting.

The client evaluates the mixed model built from its v, its alpha and the global model it
received (the paper's output v_bar = alpha * v + (1 - alpha) * w).

A training reply's train loss is w's (FedAvg's); the mixed model's goes with it as the metric
`personal-loss`. Each evaluation also reports the client's current `alpha`.

A client that arrives late (`new_clients`) takes the received global model as w and starts v
where w is (the paper's v^(0) = w^(0)) and alpha at its setting; for `new_client_epochs` epochs
v and alpha take their steps on the mixed model's loss, w fixed (nothing goes up), and the
client is evaluated with the mixture.

Settings (conf/strategy/apfl.yaml):
  alpha  starting value of the mixing weight, in [0, 1]; default 1.0, PFLlib's (`-al`). The
         paper's experiments start the adaptive weight small (0.01-0.25). At a small alpha v
         learns at only alpha times the learning rate, while w, trained at the full rate on
         the same batches, runs ahead of it from the first steps: alpha's gradient then pushes
         alpha further down, and the mixed model collapses to the global model, which on
         Dirichlet(0.1) splits is FedAvg's (about 70 % on Fashion-MNIST). Starting at 1 the
         mixed model is v, trained as a local model at the full rate, and alpha leaves 1 only
         where moving toward the global model lowers the client's own loss. On the
         default set-up it stayed 1 for every client in the round measured, and APFL gave
         Local's numbers (docs/results.md).
Alpha's learning rate is the run's learning rate (the paper's one step size; PFLlib's).

Where PFLlib departs from the paper (the paper is followed here):
  - PFLlib trains v on its own loss (the gradient of f(v), not of f(v_bar) w.r.t. v),
    approximates alpha's gradient from those two separate gradients, and at the end of each
    round overwrites v with the mixed model built from the locally trained w;
  - PFLlib adds 0.02 * alpha (an L2 penalty on alpha) to alpha's gradient; the paper's
    update has no such term.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from baselines.settings.apfl import APFLSettings
from flayer.nn.training import BeforeStep, EvalResult, Terms
from flayer.protocol.client import LATE, ClientEnv, ClientMethod, FitResult
from flayer.protocol.method import register_method


class APFLModel(nn.Module):
    """The global copy `w`, the local model `v` and the mixing weight `alpha`; calling it runs
    the mixed model alpha * v + (1 - alpha) * w through v's modules (and v's BatchNorm
    statistics)."""

    def __init__(self, net: nn.Module, alpha: float) -> None:
        super().__init__()
        self.w = net
        self.v = copy.deepcopy(net)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def mixed_params(self, w_constant: bool = False) -> dict[str, torch.Tensor]:
        """alpha * v + (1 - alpha) * w per parameter tensor; with `w_constant` no gradient
        reaches w (only v and alpha learn from the mixed model's loss)."""
        w = dict(self.w.named_parameters())
        a = self.alpha
        return {n: a * p + (1 - a) * (w[n].detach() if w_constant else w[n])
                for n, p in self.v.named_parameters()}

    def mixed(self, x: torch.Tensor, w_constant: bool = False) -> torch.Tensor:
        return functional_call(self.v, self.mixed_params(w_constant), (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixed(x)


def apfl_loss(model: APFLModel, x: torch.Tensor, y: torch.Tensor) -> Terms:
    """w's cross-entropy plus the mixed model's (w constant there): one backward pass gives w
    its own gradient and v and alpha theirs, all at the same point."""
    global_loss = F.cross_entropy(model.w(x), y)
    personal_loss = F.cross_entropy(model.mixed(x, w_constant=True), y)
    return Terms(global_loss + personal_loss,
                 {"global-loss": global_loss, "personal-loss": personal_loss})


def mixed_loss(model: APFLModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mixed model's cross-entropy with w a constant: v and alpha learn, w does not."""
    return F.cross_entropy(model.mixed(x, w_constant=True), y)


def alpha_step(model: APFLModel, lr: float) -> BeforeStep:
    """A `before_step` hook taking alpha's projected SGD step (the optimizer steps the
    models right after)."""
    def step(epoch: int, batch: int) -> None:
        alpha = model.alpha
        assert alpha.grad is not None, "the mixed model's loss gives alpha a gradient"
        with torch.no_grad():
            alpha.sub_(lr * alpha.grad).clamp_(0.0, 1.0)
        alpha.grad = None

    return step


class APFLClient(ClientMethod):
    """`self.model` is the APFLModel: w from the global model each message, v and alpha kept."""

    train_metrics = ("personal-loss",)  # the mixed model's; train-loss is w's
    settings: APFLSettings
    model: APFLModel

    def __init__(self, env: ClientEnv, model: nn.Module) -> None:
        super().__init__(env, model)
        self.model = APFLModel(model, env.settings.alpha).to(env.device)

    # w (`net`) is shared whole: received and uploaded by the defaults
    kept = ClientMethod.unshared  # v, alpha, both models' statistics

    @property
    def alpha(self) -> float:
        return float(self.model.alpha.detach())

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        model, lr = self.model, self.lr
        optimizer = torch.optim.SGD([*model.w.parameters(), *model.v.parameters()], lr=lr)
        stats = self.train_model(model, optimizer, version, loss_fn=apfl_loss,
                                 before_step=alpha_step(model, lr))
        return self.result(self.upload(), stats, loss="global-loss", with_terms=True)

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        self.receive(global_arrays, version)  # w: the global model
        model = self.model
        with torch.no_grad():  # v starts where w does (the paper's v0 = w0), alpha at its setting
            for v, w in zip(model.v.parameters(), model.w.parameters(), strict=True):
                v.copy_(w)
        if epochs:
            optimizer = torch.optim.SGD(model.v.parameters(), lr=self.lr)
            self.train_model(model, optimizer, version, purpose=LATE, epochs=epochs,
                             loss_fn=mixed_loss, before_step=alpha_step(model, self.lr))
        return self.evaluate(version)

    def evaluate(self, version: int) -> tuple[EvalResult, dict[str, float]]:
        result = self.evaluate_on(self.env.data.x_test, self.env.data.y_test)  # the mixture
        return result, {"alpha": self.alpha}


register_method("apfl", APFLSettings, APFLClient)
