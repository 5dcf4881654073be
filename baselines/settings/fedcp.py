"""FedCP's settings: the schema of conf/strategy/fedcp.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class FedCPSettings(MethodSettings):
    name: str = "fedcp"
    lam: float = 1.0
    tau: float = 1.0

    def check(self, cfg: Config, layers: LayerMap) -> None:
        from flayer.nn.layers import require_linear_head

        self.require_number("lam", ">= 0")
        self.require_number("tau", "> 0")
        require_linear_head(layers, cfg.model.name, "fedcp")
