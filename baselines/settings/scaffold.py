"""SCAFFOLD's settings: the schema of conf/strategy/scaffold.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class ScaffoldSettings(MethodSettings):
    name: str = "scaffold"
    server_lr: float = 1.0

    def check(self, cfg: Config, layers: LayerMap) -> None:
        self.require_number("server_lr", "> 0")
