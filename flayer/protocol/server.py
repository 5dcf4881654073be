"""The server side of a method: what the server holds, what a training reply must hold, and how
the accepted uploads combine into the next global model.

The defaults are FedAvg's: the server holds the parameters the method shares (every parameter
unless its client says less, `ClientMethod.shares`) and any extra modules it exchanges, asks
each client for every global tensor in full, and takes the sample-weighted mean. A method
that changes none of this declares no server side: `register_method` uses this class. The
round loop (`flayer.protocol.rounds`) calls these hooks and nothing else of a method.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import nn

from flayer.config.schema import Config, MethodSettings
from flayer.nn.layers import LayerMap
from flayer.nn.params import shared_params, with_modules
from flayer.protocol.aggregation import WeightedSum
from flayer.protocol.replies import Collected
from flayer.protocol.upload import TensorSpec, UploadSpec
from flayer.results.record import RoundRecord

# Before round 0: (the round's record, what each reply must hold, instruction config) -> the
# accepted replies of every client (`RoundLoop.ask_every_client`)
AskEveryClient = Callable[..., Collected]


class MethodServer:
    """A method's server hooks, with FedAvg's behaviour as the defaults."""

    def __init__(self, cfg: Config, settings: MethodSettings, layers: LayerMap,
                 shared: tuple[str, ...]) -> None:
        self.cfg = cfg
        self.settings = settings
        self.layers = layers
        self.shared = shared  # the model parameters that travel (ClientMethod.shares)

    def initial_global(self, model: nn.Module) -> dict[str, np.ndarray]:
        """The arrays the server holds and sends, from the run's initial model: the shared
        parameters and the extra modules' (`modules`)."""
        return with_modules(shared_params(model, self.shared), self.modules(model))

    def modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Extra modules the server holds beside the model's parameters, by the prefix of
        their arrays' names, built as every client builds them (none by default)."""
        return {}

    def upload_spec(self, global_arrays: dict[str, np.ndarray]) -> UploadSpec:
        """What every training reply must hold: by default every global tensor in full."""
        return {name: TensorSpec(tuple(arr.shape)) for name, arr in global_arrays.items()}

    def aggregate_sums(self, total: WeightedSum, previous: dict[str, np.ndarray]
                       ) -> dict[str, np.ndarray]:
        """The new global arrays from the accepted uploads' weighted sum."""
        return total.mean(previous)

    def sync_every_round(self) -> bool:
        """Whether every client must receive each new global model, evaluated or not."""
        return False

    def prepare_round0(self, ask: AskEveryClient, rec: RoundRecord) -> dict[str, np.ndarray]:
        """An extra exchange before round 0's evaluation (`ask` every client; its bytes count
        in round 0): the arrays it adds to what the server holds (none by default)."""
        return {}
