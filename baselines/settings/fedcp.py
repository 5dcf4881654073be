"""FedCP's settings: the schema of conf/strategy/fedcp.yaml and its checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings
from flayer.util.errors import ConfigError

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class FedCPSettings(MethodSettings):
    name: str = "fedcp"
    lam: float = 1.0
    tau: float = 1.0

    def check(self, cfg: Config, layers: LayerMap) -> None:
        from flayer.nn.layers import require_linear_head

        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ConfigError("strategy.lam", self.lam, "must be a finite number >= 0")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ConfigError("strategy.tau", self.tau, "must be a finite number > 0")
        require_linear_head(layers, cfg.model.name, "fedcp")
