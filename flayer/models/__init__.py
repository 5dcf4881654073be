"""Model registry: `MODELS.get(name)(input_shape, num_classes)` builds a fresh model."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from flayer.registry import Registry

ModelBuilder = Callable[[tuple[int, ...], int], nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")

from flayer.models import cnn  # noqa: E402,F401  (registers itself)
