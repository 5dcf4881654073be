"""FedALA (Zhang, Hua, Wang, Song, Xue, Ma and Guan, "FedALA: Adaptive Local Aggregation for
Personalized Federated Learning", AAAI 2023).

Training and upload are FedAvg's (the whole model, E epochs of SGD, sample-weighted mean).
What changes is how a client takes in a new global model: Adaptive Local Aggregation (ALA).
Every tensor below the top P takes the global value; each top-P tensor becomes

    theta = theta_local + (theta_global - theta_local) * W,

with W a per-element weight in [0, 1], initialised to 1 and learned by SGD (rate `eta_w`) on
a random `rand_percent` percent of the client's training data, the lower tensors frozen and W
clipped to [0, 1] after every step (dL/dW = dL/dtheta * (theta_global - theta_local)). The
sample is drawn once per ALA (seeded by run seed, client and model version) and visited in a
fixed order, so a pass's loss (that of its last batch, as in the reference) changes only
through W.

When: ALA runs in `receive`, i.e. once per new global model version, before that version is
evaluated or trained on, as PFLlib's `send_models` runs it for every client before evaluation
and training. The strategy sends every new version to every client (`sync_every_round`), so
each client aggregates every global model, as in PFLlib. A "participation" is such a receive:
  first   ALA is skipped; the client's model is the global one (its local model holds nothing
          yet; the reference detects this by comparing the first tensor)
  second  the start phase: passes repeat until the std of the last `num_pre_loss` pass losses
          is below `threshold` (or `max_start_passes` passes, which is logged)
  later   one pass
W, the participation flags and the last ALA's pass count persist in the client's state.
Then E epochs of normal training on the whole model (`fit`, FedAvg's).

A client that arrives late (`new_clients`) participates for the first time: ALA is skipped
(it has no local model yet) and its model is the global one, which it trains for
`new_client_epochs` epochs (FedAvg's local update) before it is evaluated.

Settings (conf/strategy/fedala.yaml; defaults are PFLlib's):
  eta_w             learning rate of W; default 1.0 (PFLlib `eta`)
  rand_percent      share of the training data, in percent, that W learns on; default 80
  P                 number of top parameter tensors mixed by W (the rest take the global
                    values); default 2 (PFLlib `layer_idx`: the head's weight and bias)
  threshold         the start phase stops when the std of the last losses is below it; 0.1
  num_pre_loss      how many last losses that std covers; default 10
  max_start_passes  cap on the start phase's passes (the reference has none); default 100
  sync              eager (the reference: every client runs ALA on each new global model) or
                    lazy (only clients that train or are evaluated, on the newest model when
                    they next work; the versions in between are never aggregated locally)

One difference from the reference: it also requires more than num_pre_loss losses before the
threshold may stop the start phase; here num_pre_loss losses suffice.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from baselines.settings.fedala import FedAlaSettings
from flayer.nn.params import load_params
from flayer.nn.training import EvalResult, batches, only_trainable
from flayer.protocol.client import ClientMethod
from flayer.protocol.method import register_method
from flayer.protocol.server import MethodServer

log = logging.getLogger(__name__)

WEIGHT = "ala-w/"  # prefix of W's arrays in the client's extra arrays
JOINED = "ala_joined"  # meta: the client has received a global model before
STARTED = "ala_started"  # meta: the start phase is done
PASSES = "ala_passes"  # meta: passes of the last ALA (0: skipped)


class FedAlaClient(ClientMethod):
    """FedAvg's training and upload; a new global model comes in through ALA."""

    settings: FedAlaSettings

    def receive(self, global_arrays: dict[str, np.ndarray], version: int) -> None:
        if not self.meta.get(JOINED, False):
            load_params(self.model, global_arrays)
            self.meta[JOINED] = True
            self.meta[PASSES] = 0
            return
        top = self.env.layers.top_p(self.settings.P)
        load_params(self.model, {n: v for n, v in global_arrays.items() if n not in top})
        start = not self.meta.get(STARTED, False)
        self.meta[PASSES] = self.adaptive_local_aggregation(global_arrays, top, version, start)
        self.meta[STARTED] = True

    def weights(self, top: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """W per top tensor, as stored (ones before the first ALA)."""
        params = dict(self.model.named_parameters())
        out = {}
        for name in top:
            stored = self.extra.get(WEIGHT + name)
            w = (torch.tensor(stored, device=self.env.device) if stored is not None
                 else torch.ones_like(params[name].detach()))
            out[name] = w.requires_grad_(True)
        return out

    def sample(self, version: int) -> torch.Tensor:
        """Indices of the rand_percent share of the training data W learns on this time."""
        n = self.env.data.num_train
        k = int(self.settings.rand_percent / 100 * n)
        return torch.randperm(n, generator=self.generator("ala", version))[:k]

    def adaptive_local_aggregation(self, global_arrays: dict[str, np.ndarray],
                                   top: tuple[str, ...], version: int, start: bool) -> int:
        """Learn W, then set the top tensors to local + (global - local) * W; returns the
        number of passes over the sample."""
        st, data, device = self.settings, self.env.data, self.env.device
        params = dict(self.model.named_parameters())
        local = {n: params[n].detach().clone() for n in top}
        diff = {n: torch.tensor(global_arrays[n], device=device) - local[n] for n in top}
        weights = self.weights(top)
        idx = self.sample(version)
        passes = 0
        if len(idx):
            optimizer = torch.optim.SGD(list(weights.values()), lr=st.eta_w)
            # BatchNorm may update running statistics in train mode: on copies, never the
            # client's own.
            buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
            losses: list[float] = []
            self.model.train()
            with only_trainable(self.model, ()):  # only W learns
                while True:
                    for b in batches(len(idx), self.cfg.batch_size, None):
                        sel = idx[b]
                        x = data.to_input(data.x_train[sel]).to(device)
                        y = data.y_train[sel].to(device)
                        mixed = {n: local[n] + diff[n] * weights[n] for n in top}
                        loss = F.cross_entropy(
                            functional_call(self.model, {**buffers, **mixed}, (x,)), y)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        with torch.no_grad():
                            for w in weights.values():
                                w.clamp_(0.0, 1.0)
                    losses.append(float(loss.detach()))
                    passes += 1
                    if not start:
                        break
                    recent = losses[-st.num_pre_loss:]
                    if len(recent) == st.num_pre_loss and np.std(recent) < st.threshold:
                        log.debug("client %d: ALA start phase converged after %d passes",
                                  self.env.partition_id, passes)
                        break
                    if passes >= st.max_start_passes:
                        log.warning("client %d: ALA start phase stopped by its cap of %d passes "
                                    "(std of the last %d losses %.4f, threshold %g)",
                                    self.env.partition_id, passes, len(recent),
                                    float(np.std(recent)), st.threshold)
                        break
        with torch.no_grad():
            for n in top:
                params[n].copy_(local[n] + diff[n] * weights[n])
        self.extra.update({WEIGHT + n: w.detach().cpu().numpy().copy()
                           for n, w in weights.items()})
        return passes

    def evaluate(self, version: int) -> tuple[EvalResult, dict[str, float]]:
        result, _ = super().evaluate(version)
        return result, {"ala-passes": float(self.meta.get(PASSES, 0))}


class FedAlaServer(MethodServer):
    """FedAvg's aggregation; with eager sync every client receives (and locally aggregates)
    each version."""

    settings: FedAlaSettings

    def sync_every_round(self) -> bool:
        return self.settings.sync == "eager"


register_method("fedala", FedAlaSettings, FedAlaClient, FedAlaServer)
