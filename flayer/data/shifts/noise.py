"""Gaussian noise of a per-client level: NIID-Bench's feature-noise setting (Li et al.,
"Federated Learning on Non-IID Data Silos: An Experimental Study", ICDE 2022, noise-based
feature imbalance: party P_i's inputs get noise drawn from Gau(level * i / N)).

Client i of N (its partition id, 0 .. N-1) gets x + e with e ~ N(0, (level * i / N)^2) per pixel
value, level in units of the pixel range [0, 1] (NIID-Bench adds its noise to ToTensor's
[0, 1] images): client 0 keeps its images, client N-1 gets std level * (N-1) / N. The noised
values are not clipped (as in NIID-Bench) and are kept as float32 in the stored units (uint8
images: 255 * level * i / N), so the model's input is exactly the clean input plus the noise.

One difference: NIID-Bench draws fresh noise each time a sample is loaded; here each sample's
noise is drawn once, seeded by the run seed, the client and the part (train or test), so a
client's data is one fixed set that every method and every process sees alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from flayer.config.schema import Config, ShiftConfig, within
from flayer.data.shifts import Target, register_shift
from flayer.util.errors import require
from flayer.util.seeding import rng_for

if TYPE_CHECKING:
    import torch


@dataclass
class NoiseConfig(ShiftConfig):
    """Settings of `shift=noise` (conf/shift/noise.yaml)."""

    name: str = "noise"
    # sigma: client i of N gets noise std level * i / N, in units of the pixel range [0, 1]
    level: float = 0.1

    def check_settings(self, cfg: Config) -> None:
        require(within(self.level, ">= 0"), "shift.level", self.level,
                "must be a finite number >= 0 (the noise std at client N, in units of the "
                "pixel range [0, 1])")

    def client_std(self, client: int, num_clients: int) -> float:
        """Client `client`'s noise std in units of the pixel range."""
        return self.level * client / num_clients

    def summary_fields(self) -> dict[str, Any]:
        """The level sets how far the clients' inputs drift apart."""
        return {"shift": self.name, "shift_level": self.level}


@register_shift(NoiseConfig)
def noise(x: torch.Tensor, cfg: NoiseConfig, target: Target) -> torch.Tensor:
    import torch

    std = cfg.client_std(target.client, target.num_clients) * target.span
    draws = rng_for(target.seed, "shift", "noise", target.client, target.part).standard_normal(
        tuple(x.shape), dtype=np.float32)
    return x.to(torch.float32) + torch.from_numpy(draws) * std
