"""FedProto's settings: the schema of conf/strategy/fedproto.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class FedProtoSettings(MethodSettings):
    name: str = "fedproto"
    lamda: float = 1.0

    def check(self, cfg: Config, layers: LayerMap) -> None:
        from flayer.nn.layers import require_linear_head

        self.require_number("lamda", ">= 0")
        require_linear_head(layers, cfg.model.name, "fedproto")
