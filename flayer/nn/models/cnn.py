"""The 4-layer CNN of the FLAYER paper (PFLlib's FedAvgCNN): four layers, eight tensors."""

from __future__ import annotations

import torch
from torch import nn

from flayer.data.source import DataSpec
from flayer.nn.models import MODELS, require_images


class CNN(nn.Module):
    """conv5x5(32)-pool, conv5x5(64)-pool, fc(512), fc(C); each top-level child is a layer."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels = input_shape[0]
        self.conv1 = nn.Sequential(nn.Conv2d(channels, 32, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2))
        with torch.no_grad():
            flat = self.conv2(self.conv1(torch.zeros(1, *input_shape))).numel()
        self.fc1 = nn.Sequential(nn.Linear(flat, 512), nn.ReLU())
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        return self.fc(self.fc1(torch.flatten(x, 1)))


@MODELS.register("cnn")
def build_cnn(spec: DataSpec) -> nn.Module:
    require_images(spec, "cnn")
    return CNN(spec.input_shape, spec.num_classes)
