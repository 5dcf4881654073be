"""FedProx's settings: the schema of conf/strategy/fedprox.yaml and its checks."""

from __future__ import annotations

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
        self.require_number("mu", ">= 0", note="0 is FedAvg")
