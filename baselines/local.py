"""Local training only: the standard lower reference of personalized federated learning
(PFLlib's `Local`).

Every client trains its own model on its own data and nothing else: the server holds no arrays,
a training reply uploads nothing (0 upload bytes) and no client ever sees another's model. Each
client starts from the run's initial model (the same for every client, as in PFLlib) and keeps
its whole model across rounds (BatchNorm statistics included); in every round it is sampled it
trains that model for E local epochs (`local_epochs`) of plain SGD at the run's learning rate.
Its accuracy is that of its own model on its own test data.

The round loop is the shared one: a round still samples clients, counts as a new model version
once clients reply (there is nothing to average, the version only counts the training rounds),
and evaluates every client. No settings of its own.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from baselines.settings.local import LocalSettings
from flayer.protocol.aggregation import WeightedSum
from flayer.protocol.client import ClientMethod, FitResult
from flayer.protocol.method import register_method
from flayer.protocol.server import MethodServer
from flayer.protocol.upload import Upload, UploadSpec


class LocalClient(ClientMethod):
    """Keeps its whole model (the base default) and never takes anything from the server."""

    def receive(self, global_arrays: dict[str, np.ndarray], version: int) -> None:
        """Nothing arrives: the client goes on with its own model."""

    def reload(self, global_arrays: dict[str, np.ndarray]) -> None:
        """Nothing to set again: every part of the model is the client's own."""

    def fit(self, global_arrays: dict[str, np.ndarray], version: int) -> FitResult:
        stats = self.train_model(self.model, self.optimizer(self.model), version)
        return FitResult(upload=Upload(arrays={}), num_examples=self.env.data.num_train,
                         train_loss=stats.mean_loss)


class LocalServer(MethodServer):
    """Holds nothing, expects an empty upload, and aggregates to nothing."""

    def initial_global(self, model: nn.Module) -> dict[str, np.ndarray]:
        return {}

    def upload_spec(self, global_arrays: dict[str, np.ndarray]) -> UploadSpec:
        return {}

    def aggregate_sums(self, total: WeightedSum, previous: dict[str, np.ndarray]
                       ) -> dict[str, np.ndarray]:
        return {}


register_method("local", LocalSettings, LocalClient, LocalServer)
