"""FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith, "Federated Optimization in
Heterogeneous Networks", MLSys 2020): FedAvg with a proximal term in the local objective.

Nothing is personal: each sampled client receives the global model w^t, trains it for E local
epochs (`local_epochs`) of SGD on the paper's local objective

    h_k(w; w^t) = F_k(w) + (mu / 2) * ||w - w^t||^2,

and uploads the whole model; the server takes the sample-weighted mean, as FedAvg does. A
client's accuracy is that of the received global model (with its own BatchNorm statistics).

The proximal term enters through its gradient: after the cross-entropy backward pass each
parameter's gradient gets mu * (w - w^t) added before the SGD step, which is exactly the
gradient of the objective above (the term's own autograd would give the same numbers at the
cost of one more backward pass over every parameter). BatchNorm statistics are buffers, never
in the term. With mu = 0 no hook is installed at all, so the run is FedAvg's, bit for bit. The
reported train loss is the cross-entropy (comparable with FedAvg's), not the proximal objective.

A client that arrives late (`new_clients`) trains the received global model for
`new_client_epochs` epochs on its local objective, the proximal pull toward that model
included, and is evaluated with the result.

Settings (conf/strategy/fedprox.yaml):
  mu  the proximal weight; default 0.01, the comparison's setting (the authors' repository
      advises tuning it over {0.001, 0.01, 0.1, 0.5, 1}; no value suits every setting).
      PFLlib's command-line default `mu` is 0, which makes its FedProx FedAvg.

PFLlib applies the same gradient (its perturbed gradient descent optimizer adds mu * (w - w^t)
to the gradient); here it is a hook of the one training loop. The paper's other half, letting
stragglers do less local work (gamma-inexact solutions), is not simulated: every sampled client
runs its E epochs, as PFLlib does without slow clients. The paper samples devices with
probability proportional to their data and averages the sampled models uniformly; the server
here takes the sample-weighted mean over the sampled clients instead, as FedAvg here and PFLlib
do (the same in expectation), so that mu = 0 is this project's FedAvg.
"""

from __future__ import annotations

import numpy as np

from baselines.fedavg import FedAvgClient
from baselines.settings.fedprox import FedProxSettings
from flayer.nn.training import EvalResult, TrainStats, proximal_pull
from flayer.protocol.client import LATE, FitResult
from flayer.protocol.method import register_method


class FedProxClient(FedAvgClient):
    """FedAvg's client with the proximal pull toward the received global model."""

    settings: FedProxSettings

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        stats = self.train_proximal(global_arrays, version)
        return self.result(self.upload(), stats)

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        self.receive(global_arrays, version)
        if epochs:
            self.train_proximal(global_arrays, version, epochs=epochs, purpose=LATE)
        return self.evaluate(version)

    def train_proximal(self, global_arrays: dict[str, np.ndarray], version: int, *,
                       epochs: int | None = None, purpose: str = "train") -> TrainStats:
        """SGD on the local objective: the proximal pull toward the received model."""
        mu = self.settings.mu
        hook = (proximal_pull(self.model, global_arrays, mu, self.env.device)
                if mu != 0 else None)
        return self.train_model(self.model, self.optimizer(self.model), version,
                                purpose=purpose, epochs=epochs, before_step=hook)


register_method("fedprox", FedProxSettings, FedProxClient)
