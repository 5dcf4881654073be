"""FedDBE's settings: the schema of conf/strategy/feddbe.yaml and its checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings
from flayer.util.errors import ConfigError

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class FedDBESettings(MethodSettings):
    name: str = "feddbe"
    momentum: float = 0.1
    kappa: float = 50.0

    def check(self, cfg: Config, layers: LayerMap) -> None:
        from flayer.nn.layers import require_linear_head

        if not (math.isfinite(self.momentum) and 0 < self.momentum <= 1):
            raise ConfigError("strategy.momentum", self.momentum, "must be in (0, 1]")
        if not (math.isfinite(self.kappa) and self.kappa >= 0):
            raise ConfigError("strategy.kappa", self.kappa, "must be a finite number >= 0")
        require_linear_head(layers, cfg.model.name, "feddbe")
