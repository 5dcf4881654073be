"""FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017): the non-personalized reference.

Each sampled client trains the received global model for E local epochs of plain SGD and
uploads it whole; the server takes the sample-weighted mean. A client's accuracy is that of
the received global model (with its own BatchNorm statistics). No hyperparameters of its own.

A client that arrives late (`new_clients`) fine-tunes the received global model for
`new_client_epochs` epochs of plain SGD at the run's rate (FedAvg's local update, uploading
nothing) and is evaluated with it; with no epochs, with the global model.
"""

from __future__ import annotations

from baselines.settings.fedavg import FedAvgSettings
from flayer.protocol.client import ClientMethod
from flayer.protocol.method import register_method


class FedAvgClient(ClientMethod):
    """The base contract is FedAvg: receive = load, fit = train and upload everything."""

    kept = ClientMethod.unshared  # the BatchNorm statistics: every parameter is shared


register_method("fedavg", FedAvgSettings, FedAvgClient)
