"""FedBABU's settings: the schema of conf/strategy/fedbabu.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class FedBABUSettings(MethodSettings):
    name: str = "fedbabu"
    fine_tuning_epochs: int = 10

    def check(self, cfg: Config, layers: LayerMap) -> None:
        from flayer.nn.layers import require_linear_head

        self.require(self.fine_tuning_epochs >= 0, "fine_tuning_epochs",
                     self.fine_tuning_epochs, "must be >= 0 (0: evaluate without fine-tuning)")
        require_linear_head(layers, cfg.model.name, "fedbabu")

    def summary_fields(self) -> dict[str, Any]:
        return {"fine_tuning_epochs": self.fine_tuning_epochs}
