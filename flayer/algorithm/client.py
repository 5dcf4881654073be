"""FLAYER's client side: local initialization with a head pass, adaptive per-layer rates,
and a masked upload of each tensor's most-changed elements."""

from __future__ import annotations

import numpy as np
import torch

from flayer.algorithm import masking
from flayer.algorithm.initialization import mix_into
from flayer.algorithm.rates import adapt_rates, initial_rates
from flayer.algorithm.settings import Constants, FlayerSettings, constants, reference
from flayer.nn.layers import LayerMap
from flayer.nn.params import shared_params
from flayer.nn.training import EvalResult, TrainStats, only_trainable
from flayer.protocol.client import LATE, ClientMethod, FitResult
from flayer.protocol.upload import Upload


class FlayerClient(ClientMethod):
    settings: FlayerSettings

    @classmethod
    def holdout_fraction(cls, settings: FlayerSettings) -> float:
        return settings.val_fraction if settings.accuracy_source == "val" else 0.0

    @property
    def layers(self) -> LayerMap:
        return self.env.layers

    @property
    def constants(self) -> Constants:
        return constants(self.cfg, self.settings, self.layers)

    def rates(self) -> list[float]:
        """The client's current per-layer rates (initial ones before its first training)."""
        if "rates" in self.meta:
            return [float(r) for r in self.meta["rates"]]
        quirks = (reference(self.cfg.model.name).quirk_rates if self.settings.reference_quirks
                  else None)
        return initial_rates(self.layers.num_layers, self.lr, self.constants.head_rate,
                             self.settings.adaptive_lr, quirks)

    def kept(self) -> set[str]:
        # Lower layers are overwritten from every global model; only the top-P tensors mix.
        if not self.settings.local_init:
            return self.buffers()
        return set(self.layers.top_p(self.constants.P)) | self.buffers()

    def receive(self, global_arrays: dict[str, np.ndarray], version: int) -> None:
        if not self.settings.local_init:
            super().receive(global_arrays, version)
            return
        top = self.layers.top_p(self.constants.P)
        a = float(self.meta.get("a_k", 0.0))
        self.meta["mixed_a"] = a
        mix_into(self.model, global_arrays, top, a)
        rates = self.rates()
        with only_trainable(self.model, top) as trainable:  # the head pass
            groups = [{"params": [p], "lr": rates[self.layers.layer_of[n]]}
                      for n, p in trainable.items()]
            self.train_model(self.model, torch.optim.SGD(groups), version, purpose="head",
                             epochs=1)

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        before = shared_params(self.model)
        stats = self.train_layers(version)
        after = shared_params(self.model)
        masks = {}
        if self.settings.masked_upload:
            J = self.layers.num_tensors
            for name, value in after.items():
                j = self.layers.tensor_index[name]
                mask = masking.keep_mask(np.abs(value - before[name]), j, J,
                                         self.settings.reference_quirks)
                if mask is not None:
                    masks[name] = mask
        return self.result(Upload(arrays=after, masks=masks), stats)

    def arrive(self, global_arrays: dict[str, np.ndarray], version: int, epochs: int
               ) -> tuple[EvalResult, dict[str, float]]:
        # no accuracy yet: a_k = 0, so the initialization takes the global model whole; with
        # no epochs that is what is evaluated, else the head pass and the epochs follow
        if epochs == 0:
            ClientMethod.receive(self, global_arrays, version)
        else:
            self.receive(global_arrays, version)
            self.train_layers(version, epochs=epochs, purpose=LATE)
        return self.evaluate(version)

    def train_layers(self, version: int, *, epochs: int | None = None,
                     purpose: str = "train") -> TrainStats:
        """Local SGD with the client's per-layer rates (adapted at each epoch's first batch
        with `adaptive_lr`), which it keeps for its next training."""
        k = self.constants
        groups = self.layers.param_groups(self.model, self.rates())
        optimizer = torch.optim.SGD(groups, lr=self.lr)

        def recompute(epoch: int, batch: int) -> None:
            if batch == 0:
                new = adapt_rates(self.model, self.layers, [g["lr"] for g in groups],
                                  self.lr, k.head_rate, k.s, k.c)
                for group, rate in zip(optimizer.param_groups, new, strict=True):
                    group["lr"] = rate

        stats = self.train_model(self.model, optimizer, version, purpose=purpose,
                                 epochs=epochs,
                                 before_step=recompute if self.settings.adaptive_lr else None)
        self.meta["rates"] = [float(g["lr"]) for g in optimizer.param_groups]
        return stats

    def evaluate(self, version: int) -> tuple[EvalResult, dict[str, float]]:
        data = self.env.data
        result = self.evaluate_on(data.x_test, data.y_test)
        if self.settings.accuracy_source == "val":
            self.meta["a_k"] = self.evaluate_on(data.x_val, data.y_val).accuracy
        else:
            self.meta["a_k"] = result.accuracy
        extra = {"mixed-a": float(self.meta.get("mixed_a", 0.0)), "a-k": float(self.meta["a_k"])}
        return result, extra
