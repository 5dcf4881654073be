"""Ditto's settings: the schema of conf/strategy/ditto.yaml and its checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings
from flayer.util.errors import ConfigError

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class DittoSettings(MethodSettings):
    name: str = "ditto"
    lam: float = 0.1
    personal_epochs: int = 1

    def check(self, cfg: Config, layers: LayerMap) -> None:
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ConfigError("strategy.lam", self.lam, "must be a finite number >= 0")
        if self.personal_epochs < 1:
            raise ConfigError("strategy.personal_epochs", self.personal_epochs, "must be >= 1")
