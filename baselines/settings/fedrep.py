"""FedRep's settings: the schema of conf/strategy/fedrep.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from baselines.settings.fedper import FedPerSettings
from flayer.config.schema import Config

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class FedRepSettings(FedPerSettings):
    name: str = "fedrep"
    head_epochs: int = 1

    def check(self, cfg: Config, layers: LayerMap) -> None:
        super().check(cfg, layers)
        self.require(self.head_epochs >= 1, "head_epochs", self.head_epochs, "must be >= 1")
