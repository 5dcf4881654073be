"""FedPer's settings: the schema of conf/strategy/fedper.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings
from flayer.util.errors import ConfigError

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class FedPerSettings(MethodSettings):
    name: str = "fedper"
    personal_layers: int = 1

    def check(self, cfg: Config, layers: LayerMap) -> None:
        top = layers.num_layers - 1
        if not 1 <= self.personal_layers <= top:
            raise ConfigError(
                "strategy.personal_layers", self.personal_layers,
                f"must be in [1, {top}] ({cfg.model.name} has {layers.num_layers} layers and "
                "at least one must be shared)",
            )
