"""FedDBE's settings: the schema of conf/strategy/feddbe.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class FedDBESettings(MethodSettings):
    name: str = "feddbe"
    momentum: float = 0.1
    kappa: float = 50.0

    def check(self, cfg: Config, layers: LayerMap) -> None:
        from flayer.nn.layers import require_linear_head

        self.require_number("momentum", "(0, 1]")
        self.require_number("kappa", ">= 0")
        require_linear_head(layers, cfg.model.name, "feddbe")
