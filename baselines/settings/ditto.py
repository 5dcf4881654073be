"""Ditto's settings: the schema of conf/strategy/ditto.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class DittoSettings(MethodSettings):
    name: str = "ditto"
    lam: float = 0.1
    personal_epochs: int = 1

    def check(self, cfg: Config, layers: LayerMap) -> None:
        self.require_number("lam", ">= 0")
        self.require(self.personal_epochs >= 1, "personal_epochs", self.personal_epochs,
                     "must be >= 1")
