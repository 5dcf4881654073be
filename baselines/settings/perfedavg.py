"""Per-FedAvg's settings: the schema of conf/strategy/perfedavg.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class PerFedAvgSettings(MethodSettings):
    name: str = "perfedavg"
    beta: float | None = None

    def check(self, cfg: Config, layers: LayerMap) -> None:
        self.require_number("beta", "> 0", null="the run's learning rate")

    def meta_rate(self, cfg: Config) -> float:
        """beta: the setting, else the run's learning rate."""
        return cfg.learning_rate if self.beta is None else self.beta
