"""Model registry: `MODELS.get(name)(spec)` builds a fresh model for a dataset's DataSpec;
`build_model` the run's seeded initial model."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from flayer.config.schema import Config
from flayer.data.source import DataSpec
from flayer.util.errors import ConfigError
from flayer.util.registry import Registry, import_modules
from flayer.util.seeding import derive_seed

ModelBuilder = Callable[[DataSpec], nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")


def build_model(cfg: Config, spec: DataSpec) -> nn.Module:
    """The run's initial model; identical on the server and on every client."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "model-init"))
        return MODELS.get(cfg.model.name)(spec)


def require_images(spec: DataSpec, model: str) -> None:
    """ConfigError (a ValueError, reported cleanly by run.py) unless the dataset gives images,
    so a token dataset paired with an image model fails before any training."""
    if spec.vocab_size is not None or len(spec.input_shape) != 3:
        given = (f"token ids of shape {spec.input_shape}" if spec.vocab_size is not None
                 else f"inputs of shape {spec.input_shape}")
        raise ConfigError("model.name", model,
                          f"{model} takes images (C, H, W); this dataset gives {given} "
                          "(use model=fasttext for text)")


def require_tokens(spec: DataSpec, model: str) -> None:
    """ConfigError unless the dataset gives token ids with a known vocabulary size."""
    if spec.vocab_size is None:
        raise ConfigError("model.name", model,
                          f"{model} takes token ids and needs the dataset's vocabulary size; "
                          f"this dataset gives inputs of shape {spec.input_shape} and no "
                          "vocabulary (use an image model such as cnn or resnet18)")
    if spec.vocab_size < 2:
        raise ConfigError("model.name", model,
                          f"{model} needs a vocabulary beyond the padding id 0, got "
                          f"vocab_size={spec.vocab_size}")


import_modules(__name__, __path__)  # each module registers its model(s)
