"""FLAYER's settings and its reference constants per model (no torch: the schema Hydra checks
conf/strategy/flayer.yaml against is registered before the method is imported).

Settings (conf/strategy/flayer.yaml; null = the reference value for the run's model, below):
  local_init        layer-wise local initialization; off = plain copy of the global model
  adaptive_lr       per-layer adaptive learning rates; off = one rate eta for every layer
  masked_upload     layer-wise selective upload; off = upload every tensor in full
  reference_quirks  reproduce the reference code's evident bugs (flayer.algorithm): its starting
                    rate groups and withholding whole 1x1 convolutions
  sync              eager | lazy: eager (the reference) initializes every client from each new
                    global model; lazy only the clients that train or are evaluated, each
                    from the newest model when it next works (skipped versions are never
                    mixed in)
  accuracy_source   test | val: which accuracy becomes the next round's mixing weight a_k
  val_fraction      share of each client's training data held out when accuracy_source=val
  P, s, c, head_rate  top tensors mixed, rate scale, rate multiplier, head-rate fraction
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass(frozen=True)
class Reference:
    """FLAYER's constants as the paper's reference scripts set them for one model."""

    P: int = 2  # top parameter tensors mixed and trained by the head pass
    s: float | None = None  # rate scale; None = number of layers - 1
    c: float = 1.0  # rate multiplier
    head_rate: float = 0.2  # head learning rate as a fraction of lr
    quirk_rates: tuple[float, ...] | None = None  # reference_quirks: starting rates / lr


# A model without an entry gets Reference()'s values (and no quirk rates).
REFERENCE: dict[str, Reference] = {
    "cnn": Reference(P=2, c=20.0, quirk_rates=(1.0, 30.0, 40.0, 0.2)),
    # last 4 tensors: layer4.1.bn2 weight and bias, fc weight and bias
    "resnet18": Reference(P=4, quirk_rates=(1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 0.1)),
    "fasttext": Reference(P=2, quirk_rates=(1.0, 2.0, 0.1)),  # embedding, fc1, fc
    # Ours, not the paper's (it has no recurrent model): P = 2 mixes and trains the head (fc
    # weight and bias) as for its CNN and fastText; s, c and the head rate are the defaults;
    # no quirk rates (the reference code has no such model to take starting rates from).
    "char_lstm": Reference(P=2),  # embedding, lstm1, lstm2, fc
}


def reference(model: str) -> Reference:
    return REFERENCE.get(model, Reference())


@dataclass
class FlayerSettings(MethodSettings):
    name: str = "flayer"
    local_init: bool = True
    adaptive_lr: bool = True
    masked_upload: bool = True
    reference_quirks: bool = False
    sync: str = "eager"
    accuracy_source: str = "test"
    val_fraction: float = 0.1
    P: int | None = None
    s: float | None = None
    c: float | None = None
    head_rate: float | None = None

    def check(self, cfg: Config, layers: LayerMap) -> None:
        from flayer.protocol.rounds import SYNC_MODES  # the check runs once the model is built

        self.require(self.sync in SYNC_MODES, "sync", self.sync,
                     f"must be one of {', '.join(SYNC_MODES)}")
        self.require(self.accuracy_source in ("test", "val"), "accuracy_source",
                     self.accuracy_source, "must be test or val")
        self.require_number("val_fraction", "(0, 1)")
        k = constants(cfg, self, layers)
        self.require(1 <= k.P <= layers.num_tensors, "P", k.P,
                     f"must be in [1, {layers.num_tensors}] (parameter tensors of "
                     f"{cfg.model.name})")
        for key in ("s", "c", "head_rate"):
            value = getattr(k, key)
            self.require(value > 0, key, value, "must be > 0 (or null for the reference value)")
        if self.reference_quirks and self.adaptive_lr:
            q = reference(cfg.model.name).quirk_rates
            self.require(q is not None and len(q) == layers.num_layers, "reference_quirks",
                         True, f"needs the reference's starting rates for {cfg.model.name} "
                         f"({layers.num_layers} layers); flayer.algorithm.settings.REFERENCE has "
                         f"{q}")

    def summary_fields(self) -> dict[str, Any]:
        return {"accuracy_source": self.accuracy_source}


@dataclass(frozen=True)
class Constants:
    """FLAYER's constants after precedence: strategy setting > reference for the model."""

    P: int
    s: float
    c: float
    head_rate: float


def constants(cfg: Config, settings: FlayerSettings, layers: LayerMap) -> Constants:
    ref = reference(cfg.model.name)

    def pick(own: Any, ref_value: Any) -> Any:
        return ref_value if own is None else own

    s_ref = ref.s if ref.s is not None else float(layers.num_layers - 1)
    return Constants(
        P=pick(settings.P, ref.P),
        s=float(pick(settings.s, s_ref)),
        c=float(pick(settings.c, ref.c)),
        head_rate=float(pick(settings.head_rate, ref.head_rate)),
    )
