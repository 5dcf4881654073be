"""APFL's settings: the schema of conf/strategy/apfl.yaml and its checks."""

from __future__ import annotations

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
        self.require_number("alpha", "[0, 1]")
