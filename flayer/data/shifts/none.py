"""No shift: every client's inputs as its split gives them (the default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flayer.config.schema import ShiftConfig
from flayer.data.shifts import Target, register_shift

if TYPE_CHECKING:
    import torch


@dataclass
class NoShiftConfig(ShiftConfig):
    """Settings of `shift=none` (conf/shift/none.yaml): none."""

    name: str = "none"
    images_only = False  # it changes nothing, so any data will do

    def summary_fields(self) -> dict[str, Any]:
        """Nothing: a plain run's summary reads as it did before shifts existed."""
        return {}


@register_shift(NoShiftConfig)
def none(x: torch.Tensor, cfg: NoShiftConfig, target: Target) -> torch.Tensor:
    return x
