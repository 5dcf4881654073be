"""APFL's settings: the schema of conf/strategy/apfl.yaml and its checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class APFLSettings(MethodSettings):
    name: str = "apfl"
    alpha: float = 1.0

    def check(self, cfg: Config, layers: LayerMap) -> None:
        self.require(math.isfinite(self.alpha) and 0.0 <= self.alpha <= 1.0, "alpha",
                     self.alpha, "must be in [0, 1]")
