"""FedPer's settings: the schema of conf/strategy/fedper.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class FedPerSettings(MethodSettings):
    name: str = "fedper"
    personal_layers: int = 1

    def check(self, cfg: Config, layers: LayerMap) -> None:
        top = layers.num_layers - 1
        self.require(1 <= self.personal_layers <= top, "personal_layers", self.personal_layers,
                     f"must be in [1, {top}] ({cfg.model.name} has {layers.num_layers} layers "
                     "and at least one must be shared)")
