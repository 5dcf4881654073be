"""FLAYER (Chen et al., IJCAI 2025): the client side, the server strategy and its settings.

Settings (conf/strategy/flayer.yaml; null = the model's reference value, conf/model/*.yaml):
  local_init        layer-wise local initialization; off = plain copy of the global model
  adaptive_lr       per-layer adaptive learning rates; off = one rate eta for every layer
  masked_upload     layer-wise selective upload; off = upload every tensor in full
  reference_quirks  reproduce the reference code's evident bugs (FLAYER.md): its starting
                    rate groups and withholding whole 1x1 convolutions
  accuracy_source   test | val: which accuracy becomes the next round's mixing weight a_k
  val_fraction      share of each client's training data held out when accuracy_source=val
  P, s, c, head_rate  top tensors mixed, rate scale, rate multiplier, head-rate fraction
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flayer.config import Config, StrategyConfig
from flayer.errors import require as check_setting
from flayer.flayer import masking
from flayer.flayer.initialization import head_optimizer, mix_into, unfreeze
from flayer.flayer.rates import adapt_rates, initial_rates
from flayer.layers import LayerMap
from flayer.method import ClientMethod, FitResult, load_params, register_method, shared_params
from flayer.strategy import PflStrategy
from flayer.training import EvalResult
from flayer.upload import TensorSpec, Upload, UploadSpec


@dataclass
class FlayerConfig(StrategyConfig):
    name: str = "flayer"
    local_init: bool = True
    adaptive_lr: bool = True
    masked_upload: bool = True
    reference_quirks: bool = False
    accuracy_source: str = "test"
    val_fraction: float = 0.1
    P: int | None = None
    s: float | None = None
    c: float | None = None
    head_rate: float | None = None

    def check(self, cfg: Config, layers: LayerMap) -> None:
        def require(ok: bool, key: str, value: object, allowed: str) -> None:
            check_setting(ok, f"strategy.{key}", value, allowed)

        require(self.accuracy_source in ("test", "val"), "accuracy_source",
                self.accuracy_source, "must be test or val")
        require(0 < self.val_fraction < 1, "val_fraction", self.val_fraction,
                "must be in (0, 1)")
        P = cfg.model.P if self.P is None else self.P
        require(1 <= P <= layers.num_tensors, "P", P,
                f"must be in [1, {layers.num_tensors}] (parameter tensors of {cfg.model.name})")
        for key in ("s", "c", "head_rate"):
            own = getattr(self, key)
            require(own is None or own > 0, key, own, "must be > 0 (or null for the model's)")
        if self.reference_quirks and self.adaptive_lr:
            q = cfg.model.quirk_rates
            require(q is not None and len(q) == layers.num_layers, "reference_quirks", True,
                    f"needs model.quirk_rates with {layers.num_layers} entries, got {q}")


@dataclass(frozen=True)
class Constants:
    """FLAYER's constants after precedence: strategy setting > model reference value."""

    P: int
    s: float
    c: float
    head_rate: float


def constants(client_or_strategy) -> Constants:
    cfg, st = client_or_strategy.cfg, client_or_strategy.settings
    model, layers = cfg.model, client_or_strategy.layers

    def pick(own, ref):
        return ref if own is None else own

    s_ref = model.s if model.s is not None else float(layers.num_layers - 1)
    return Constants(
        P=pick(st.P, model.P),
        s=float(pick(st.s, s_ref)),
        c=float(pick(st.c, model.c)),
        head_rate=float(pick(st.head_rate, model.head_rate)),
    )


class FlayerClient(ClientMethod):
    settings: FlayerConfig

    @classmethod
    def holdout_fraction(cls, settings: FlayerConfig) -> float:
        return settings.val_fraction if settings.accuracy_source == "val" else 0.0

    @property
    def layers(self):
        return self.env.layers

    def rates(self) -> list[float]:
        """The client's current per-layer rates (initial ones before its first training)."""
        if "rates" in self.meta:
            return [float(r) for r in self.meta["rates"]]
        quirks = self.cfg.model.quirk_rates if self.settings.reference_quirks else None
        k = constants(self)
        return initial_rates(self.layers.num_layers, self.lr, k.head_rate,
                             self.settings.adaptive_lr, quirks)

    def receive(self, global_arrays: dict[str, np.ndarray], version: int) -> None:
        if not self.settings.local_init:
            load_params(self.model, global_arrays)
            return
        k = constants(self)
        top = self.layers.top_p(k.P)
        a = float(self.meta.get("a_k", 0.0))
        self.meta["mixed_a"] = a
        mix_into(self.model, global_arrays, top, a)
        rates = self.rates()
        rate_of = {n: rates[self.layers.layer_of[n]] for n in top}
        try:
            self.train_model(self.model, head_optimizer(self.model, top, rate_of), version,
                             purpose="head", epochs=1)
        finally:
            unfreeze(self.model)

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        k = constants(self)
        rates = self.rates()
        groups = self.layers.param_groups(self.model, rates)
        optimizer = torch.optim.SGD(groups, lr=self.lr)
        before = shared_params(self.model)

        def recompute(epoch: int, batch: int) -> None:
            if batch == 0:
                new = adapt_rates(self.model, self.layers, [g["lr"] for g in groups],
                                  self.lr, k.head_rate, k.s, k.c)
                for group, rate in zip(optimizer.param_groups, new, strict=True):
                    group["lr"] = rate

        stats = self.train_model(self.model, optimizer, version,
                                 before_step=recompute if self.settings.adaptive_lr else None)
        self.meta["rates"] = [float(g["lr"]) for g in optimizer.param_groups]
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
        return FitResult(Upload(arrays=after, masks=masks), self.env.data.num_train,
                         stats.mean_loss)

    def evaluate(self) -> tuple[EvalResult, dict[str, float]]:
        data = self.env.data
        result = self.evaluate_on(data.x_test, data.y_test)
        if self.settings.accuracy_source == "val":
            self.meta["a_k"] = self.evaluate_on(data.x_val, data.y_val).accuracy
        else:
            self.meta["a_k"] = result.accuracy
        extra = {"mixed-a": float(self.meta.get("mixed_a", 0.0)), "a-k": float(self.meta["a_k"])}
        return result, extra


class FlayerStrategy(PflStrategy):
    settings: FlayerConfig

    def sync_every_round(self) -> bool:
        # Every client re-initializes from each new global model, evaluated or not.
        return self.settings.local_init

    def upload_spec(self, global_arrays: dict[str, np.ndarray]) -> UploadSpec:
        J = self.layers.num_tensors
        spec = {}
        for name, arr in global_arrays.items():
            kept = None
            if self.settings.masked_upload:
                kept = masking.kept_count(self.layers.tensor_index[name], tuple(arr.shape), J,
                                          self.settings.reference_quirks)
            spec[name] = TensorSpec(tuple(arr.shape), kept)
        return spec


register_method("flayer", FlayerConfig, FlayerClient, FlayerStrategy)
