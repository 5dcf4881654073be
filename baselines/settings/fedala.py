"""FedALA's settings: the schema of conf/strategy/fedala.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class FedAlaSettings(MethodSettings):
    name: str = "fedala"
    eta_w: float = 1.0
    rand_percent: float = 80.0
    P: int = 2
    threshold: float = 0.1
    num_pre_loss: int = 10
    max_start_passes: int = 100
    sync: str = "eager"

    def check(self, cfg: Config, layers: LayerMap) -> None:
        from flayer.protocol.rounds import SYNC_MODES

        self.require_number("eta_w", "> 0")
        self.require_number("rand_percent", "(0, 100]")
        self.require(1 <= self.P <= layers.num_tensors, "P", self.P,
                     f"must be in [1, {layers.num_tensors}] (parameter tensors of "
                     f"{cfg.model.name})")
        self.require_number("threshold", "> 0")
        self.require(self.num_pre_loss >= 2, "num_pre_loss", self.num_pre_loss,
                     "must be >= 2 (a std of one loss is always 0)")
        self.require(self.max_start_passes >= 1, "max_start_passes", self.max_start_passes,
                     "must be >= 1")
        self.require(self.sync in SYNC_MODES, "sync", self.sync,
                     f"must be one of {', '.join(SYNC_MODES)}")
