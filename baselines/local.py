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

A client that arrives late (`new_clients`) receives nothing: it trains the run's initial model
for `new_client_epochs` epochs and is evaluated with it (no epochs: the initial model).
"""

from __future__ import annotations

from baselines.settings.local import LocalSettings
from flayer.nn.layers import LayerMap
from flayer.protocol.client import ClientMethod
from flayer.protocol.method import register_method


class LocalClient(ClientMethod):
    """Shares nothing: the server holds nothing, nothing is received or uploaded, and the
    client keeps its whole model (the base default)."""

    @classmethod
    def shares(cls, settings: LocalSettings, layers: LayerMap) -> tuple[str, ...]:
        return ()


register_method("local", LocalSettings, LocalClient)
