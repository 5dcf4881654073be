"""Rotation: the clients fall into `groups` groups, and each group's images are turned by the
group's own angle, the same for the train and test samples of its clients (the rotated-MNIST
setting of clustered and personalized FL, e.g. Ghosh et al., "An Efficient Framework for
Clustered Federated Learning", NeurIPS 2020: four groups at 0, 90, 180 and 270 degrees).

Groups: the clients in an order drawn with the run seed, dealt out to the groups in turn, so
group sizes differ by at most one and which client is in which group changes with the seed.
Angles are counter-clockwise in degrees. A multiple of 90 degrees on square images (and of 180
on any) is an exact permutation of the pixels (the stored type is kept); any other angle
samples the turned image bilinearly, fills what comes from outside the image with black, and
rounds back to the stored type where it is an integer one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from flayer.config.schema import Config, ShiftConfig
from flayer.data.shifts import Target, register_shift
from flayer.util.errors import require
from flayer.util.seeding import rng_for

if TYPE_CHECKING:
    import torch


@dataclass
class RotateConfig(ShiftConfig):
    """Settings of `shift=rotate` (conf/shift/rotate.yaml)."""

    name: str = "rotate"
    groups: int = 4  # K: how many groups of clients, each with its own angle
    # One angle per group in degrees, counter-clockwise; null = K angles evenly over the full
    # turn, 360 * k / K for group k (K = 4: 0, 90, 180, 270).
    angles: list[float] | None = None

    def check_settings(self, cfg: Config) -> None:
        k = self.groups
        require(k >= 1 and k <= cfg.num_clients, "shift.groups", k,
                f"must be from 1 to num_clients ({cfg.num_clients}): each group needs a client")
        require(self.angles is None or len(self.angles) == k, "shift.angles", self.angles,
                f"must list one angle per group (shift.groups={k}), or be null for angles "
                "evenly over the full turn")
        require(self.angles is None or all(math.isfinite(a) for a in self.angles),
                "shift.angles", self.angles, "must be finite numbers of degrees")

    def group_angles(self) -> list[float]:
        """Each group's angle in degrees."""
        if self.angles is not None:
            return [float(a) for a in self.angles]
        return [360.0 * k / self.groups for k in range(self.groups)]

    def summary_fields(self) -> dict[str, Any]:
        """The groups and their angles make the experiment."""
        return {"shift": self.name, "shift_groups": self.groups,
                "shift_angles": self.group_angles()}


def client_groups(num_clients: int, groups: int, seed: int) -> np.ndarray:
    """Every client's group: the clients in a seeded random order, dealt out to the groups in
    turn (sizes differ by at most one)."""
    order = rng_for(seed, "shift", "rotate", "groups").permutation(num_clients)
    group = np.empty(num_clients, dtype=np.int64)
    group[order] = np.arange(num_clients) % groups
    return group


def rotate(x: torch.Tensor, degrees: float, black: float = 0.0) -> torch.Tensor:
    """Images `x` (..., height, width) turned counter-clockwise by `degrees` about their
    centre, in their stored type; what comes from outside the image is `black`."""
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    turn = degrees % 360.0
    quarter = turn / 90.0
    if quarter == int(quarter) and (h == w or int(quarter) % 2 == 0):
        return torch.rot90(x, int(quarter), dims=(-2, -1)).contiguous()
    flat = x.reshape(-1, 1, h, w).to(torch.float32) - black
    c, s = math.cos(math.radians(turn)), math.sin(math.radians(turn))
    # output pixel -> where it comes from in the input, in grid_sample's [-1, 1] coordinates
    # (x to the right, y down; scaled so that the turn is one in pixels on any aspect)
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=torch.float32)
    grid = F.affine_grid(theta.expand(len(flat), 2, 3), list(flat.shape), align_corners=False)
    turned = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False) + black
    turned = turned.reshape(x.shape)
    if x.dtype.is_floating_point:
        return turned.to(x.dtype)
    info = torch.iinfo(x.dtype)
    return turned.round().clamp(info.min, info.max).to(x.dtype)


@register_shift(RotateConfig)
def rotate_group(x: torch.Tensor, cfg: RotateConfig, target: Target) -> torch.Tensor:
    group = client_groups(target.num_clients, cfg.groups, target.seed)[target.client]
    return rotate(x, cfg.group_angles()[group], target.black)
