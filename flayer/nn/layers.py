"""THE layer notion: which parameter tensors form layer l, the head, and the top-P tensors.

A layer is a top-level child module that owns parameters, in `named_children()` order.
Tensors are addressed by parameter name; their index j is their position in
`model.parameters()`. Nothing else in the project decides what a layer is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Layer:
    index: int
    name: str  # the child module's attribute name
    params: tuple[str, ...]  # parameter names owned by this layer, in parameters() order


class LayerMap:
    """Maps parameter names to tensor indices and layers for one model architecture."""

    def __init__(self, model: nn.Module) -> None:
        names = [name for name, _ in model.named_parameters()]
        self.tensor_index: dict[str, int] = {name: j for j, name in enumerate(names)}
        self.shapes: dict[str, tuple[int, ...]] = {
            name: tuple(p.shape) for name, p in model.named_parameters()
        }
        layers: list[Layer] = []
        for child_name, child in model.named_children():
            owned = tuple(f"{child_name}.{n}" for n, _ in child.named_parameters())
            if owned:
                layers.append(Layer(len(layers), child_name, owned))
        covered = [n for layer in layers for n in layer.params]
        if sorted(covered) != sorted(names):
            raise ValueError(
                f"{type(model).__name__} owns parameters outside its top-level children"
            )
        self.layers: tuple[Layer, ...] = tuple(layers)
        self.layer_of: dict[str, int] = {n: layer.index for layer in layers for n in layer.params}
        self.param_names: tuple[str, ...] = tuple(names)
        self.buffer_names: tuple[str, ...] = tuple(n for n, _ in model.named_buffers())

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_tensors(self) -> int:
        return len(self.param_names)

    @property
    def head(self) -> Layer:
        return self.layers[-1]

    @property
    def body_params(self) -> tuple[str, ...]:
        return tuple(n for layer in self.layers[:-1] for n in layer.params)

    def top_p(self, p: int) -> tuple[str, ...]:
        """The last p parameter tensors."""
        if not 1 <= p <= self.num_tensors:
            raise ValueError(f"P must be in [1, {self.num_tensors}], got {p}")
        return self.param_names[-p:]

    def param_groups(self, model: nn.Module, rates: list[float]) -> list[dict]:
        """One optimizer group per layer, in layer order, with the given learning rates."""
        if len(rates) != self.num_layers:
            raise ValueError(f"need {self.num_layers} rates, got {len(rates)}")
        params = dict(model.named_parameters())
        return [
            {"params": [params[n] for n in layer.params], "lr": rate, "layer": layer.index}
            for layer, rate in zip(self.layers, rates, strict=True)
        ]

    def linear_head_problem(self) -> str | None:
        """Why the head is not one Linear layer after a body (None when it is); methods that
        split features from the classifier need that shape."""
        shapes = [self.shapes[n] for n in self.head.params]
        if sorted(len(s) for s in shapes) not in ([2], [1, 2]) or self.num_layers < 2:
            return (f"the last layer {self.head.name!r} (tensor shapes {shapes}) is not one "
                    "Linear head after a body")
        return None

    def head_module(self, model: nn.Module) -> nn.Module:
        return getattr(model, self.head.name)

    def feature_width(self, model: nn.Module) -> int:
        """Width of the head's input (the feature vector)."""
        head = self.head_module(model)
        if not isinstance(head, nn.Linear):
            raise TypeError(f"the head {self.head.name!r} must be nn.Linear, got {type(head)}")
        return head.in_features


def require_linear_head(layers: LayerMap, model_name: str, method: str) -> None:
    """ConfigError unless the model's head is one Linear layer after a body."""
    from flayer.util.errors import ConfigError

    problem = layers.linear_head_problem()
    if problem is not None:
        raise ConfigError("model.name", model_name, f"{method} cannot run: {problem}")


@contextmanager
def headless(model: nn.Module, layers: LayerMap) -> Iterator[nn.Module]:
    """Temporarily replace the head by the identity, so `model(x)` returns features."""
    name = layers.head.name
    head = getattr(model, name)
    setattr(model, name, nn.Identity())
    try:
        yield model
    finally:
        setattr(model, name, head)


def features(model: nn.Module, layers: LayerMap, x: torch.Tensor) -> torch.Tensor:
    """The input the head would receive for x."""
    with headless(model, layers):
        return model(x)
