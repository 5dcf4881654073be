"""GPFL's settings: the schema of conf/strategy/gpfl.yaml and its checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class GPFLSettings(MethodSettings):
    name: str = "gpfl"
    lam: float = 0.01
    mu: float = 0.1

    def check(self, cfg: Config, layers: LayerMap) -> None:
        from flayer.nn.layers import require_linear_head

        self.require(math.isfinite(self.lam) and self.lam >= 0, "lam", self.lam,
                     "must be a finite number >= 0")
        self.require(math.isfinite(self.mu) and self.mu >= 0, "mu", self.mu,
                     "must be a finite number >= 0")
        require_linear_head(layers, cfg.model.name, "gpfl")
