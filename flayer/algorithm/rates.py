"""FLAYER's per-layer adaptive learning rates (Eq. 3-4).

For a middle layer l (0 < l < L-1) the rate is the mean over its tensors p of
    c * eta * (1 + (l / s) * ln(1 + 1 / ||grad_p||)),
recomputed at the first mini-batch of each epoch. Layer 0 keeps eta; the head keeps eta * h.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from flayer.nn.layers import LayerMap

EPS = 1e-12  # guards 1 / ||grad|| against a zero gradient


def initial_rates(num_layers: int, eta: float, head_rate: float, adaptive: bool,
                  quirk_multipliers: Sequence[float] | None = None) -> list[float]:
    """Rates before a client's first recomputation: eta per layer, eta * h for the head.

    `quirk_multipliers` (reference_quirks) gives the reference's starting groups instead.
    Without adaptive rates every layer, the head included, uses eta.
    """
    if not adaptive:
        return [eta] * num_layers
    if quirk_multipliers is not None:
        if len(quirk_multipliers) != num_layers:
            raise ValueError(
                f"model.quirk_rates has {len(quirk_multipliers)} entries, the model "
                f"{num_layers} layers"
            )
        return [eta * m for m in quirk_multipliers]
    return [eta] * (num_layers - 1) + [eta * head_rate]


def layer_rate(layer: int, grad_norms: Sequence[float], eta: float, s: float, c: float) -> float:
    """Mean over the layer's tensors of c * eta * (1 + (l / s) * ln(1 + 1 / ||g||))."""
    rates = [c * eta * (1 + (layer / s) * math.log(1 + 1 / (g + EPS))) for g in grad_norms]
    return sum(rates) / len(rates)


def adapt_rates(model: nn.Module, layers: LayerMap, current: Sequence[float], eta: float,
                head_rate: float, s: float, c: float) -> list[float]:
    """New per-layer rates from the gradients now in the model (after backward)."""
    params = dict(model.named_parameters())
    out = list(current)
    last = layers.num_layers - 1
    for layer in layers.layers:
        if layer.index == 0:
            out[0] = eta
        elif layer.index == last:
            out[last] = eta * head_rate
        else:
            norms = [
                float(torch.linalg.vector_norm(params[n].grad))
                for n in layer.params
                if params[n].grad is not None
            ]
            if norms:
                out[layer.index] = layer_rate(layer.index, norms, eta, s, c)
    return out
