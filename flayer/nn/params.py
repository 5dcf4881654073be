"""A model's parameters as named arrays, the form in which they travel and are stored: taken
out of a model, put back into it, and the same for the extra modules a method exchanges
beside its model (FedCP's policy network, GPFL's conditional valve and embeddings)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
import torch
from torch import nn


def shared_params(model: nn.Module, names: Collection[str] | None = None
                  ) -> dict[str, np.ndarray]:
    """The model's parameters as arrays, or only the named ones (BatchNorm statistics are
    buffers: never shared)."""
    return {n: p.detach().cpu().numpy().copy() for n, p in model.named_parameters()
            if names is None or n in names}


def load_params(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in arrays.items():
            params[name].copy_(torch.as_tensor(value))


def load_part(model: nn.Module, arrays: Mapping[str, np.ndarray], names: Collection[str],
              skip: Collection[str] = ()) -> None:
    """Set the model's named parameters, but those in `skip`, from the arrays. Every named one
    must be there, and no array may name another of the model's parameters: it would overwrite
    what the client keeps, a bug worth stopping for. Arrays that name no parameter of the model
    (an extra module's, the server's own) are not the model's to load."""
    params = {n for n, _ in model.named_parameters()}
    shared = set(names)
    foreign = sorted((set(arrays) & params) - shared)
    if foreign:
        raise ValueError(f"the global model holds {foreign}: parameters this method does not "
                         "share")
    missing = sorted(shared - set(arrays))
    if missing:
        raise ValueError(f"the global model lacks the shared parameters {missing}")
    load_params(model, {n: arrays[n] for n in names if n not in skip})


def module_arrays(modules: Mapping[str, nn.Module]) -> dict[str, np.ndarray]:
    """The parameters of extra modules as arrays named `<prefix><parameter>`, one prefix per
    module (`{"fedcp.cpn.": cpn}`)."""
    return {prefix + name: value for prefix, module in modules.items()
            for name, value in shared_params(module).items()}


def load_modules(modules: Mapping[str, nn.Module], arrays: Mapping[str, np.ndarray]) -> None:
    """Set extra modules' parameters from arrays named as `module_arrays` names them."""
    for prefix, module in modules.items():
        load_params(module, {name: arrays[prefix + name] for name, _ in
                             module.named_parameters()})


def with_modules(arrays: Mapping[str, np.ndarray], modules: Mapping[str, nn.Module]
                 ) -> dict[str, np.ndarray]:
    """The model's arrays and the extra modules' arrays together; ValueError where a name
    would stand for two tensors."""
    extra = module_arrays(modules)
    clash = set(arrays) & set(extra)
    if clash:
        raise ValueError(f"model parameters {sorted(clash)} clash with the extra modules' "
                         f"names ({', '.join(modules)})")
    return {**arrays, **extra}
