"""FedProx's settings: the schema of conf/strategy/fedprox.yaml and its checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class FedProxSettings(MethodSettings):
    name: str = "fedprox"
    mu: float = 0.01

    def check(self, cfg: Config, layers: LayerMap) -> None:
        self.require(math.isfinite(self.mu) and self.mu >= 0, "mu", self.mu,
                     "must be a finite number >= 0 (0 is FedAvg)")
