"""Model registry: `MODELS.get(name)(spec)` builds a fresh model for a dataset's DataSpec."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from flayer.data.source import DataSpec
from flayer.registry import Registry

ModelBuilder = Callable[[DataSpec], nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")

from flayer.models import cnn  # noqa: E402,F401  (registers itself)
