"""FedRoD's settings: the schema of conf/strategy/fedrod.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class FedRoDSettings(MethodSettings):
    name: str = "fedrod"

    def check(self, cfg: Config, layers: LayerMap) -> None:
        from flayer.nn.layers import require_linear_head

        require_linear_head(layers, cfg.model.name, "fedrod")
