"""FLAYER's local initialization (Eq. 2): copy the global model, mixing the top-P tensors
with the client's own by its last accuracy a_k (the head pass that follows is the client's,
flayer.algorithm.client)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn


def mix_into(model: nn.Module, global_arrays: Mapping[str, np.ndarray], top: Iterable[str],
             a: float) -> None:
    """Every tensor <- global, except each top tensor <- a * local + (1 - a) * global."""
    top = set(top)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in global_arrays.items():
            g = torch.as_tensor(value, device=params[name].device)
            if name in top:
                params[name].mul_(a).add_(g, alpha=1.0 - a)
            else:
                params[name].copy_(g)
