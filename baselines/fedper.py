"""FedPer (Arivazhagan et al., "Federated Learning with Personalization Layers",
arXiv 1912.00818): a shared body, a personal head.

The server holds, sends and averages only the body (every layer but the personal ones, by the
project's layer notion, `flayer.nn.layers.LayerMap`); the personal layers never leave the client.
Each round a client loads the received body into its own model (keeping its own head), trains
the whole model for E epochs (`local_epochs`) of plain SGD at the run's rate, and uploads the
body. Its accuracy is that of its own model: the global body with its personal head. Uploaded
bytes are therefore those of the body only.

A client that arrives late (`new_clients`) puts a fresh head (the run's initial one) on the
received body, trains the whole model for `new_client_epochs` epochs (FedPer's local update)
and is evaluated with it.

Settings (conf/strategy/fedper.yaml):
  personal_layers  how many top layers stay on the client (the paper's K_P), default 1: only
                   the head (the classifier), as in PFLlib. Must leave at
                   least one layer to share.
"""

from __future__ import annotations

from baselines.settings.fedper import FedPerSettings
from flayer.nn.layers import LayerMap
from flayer.protocol.client import ClientMethod
from flayer.protocol.method import register_method


def body_names(layers: LayerMap, personal_layers: int = 1) -> tuple[str, ...]:
    """The shared parameter names: every layer but the top `personal_layers` (1: exactly
    `LayerMap.body_params`). Methods that keep a personal head all split the model here."""
    if not 1 <= personal_layers < layers.num_layers:
        raise ValueError(
            f"personal_layers must be in [1, {layers.num_layers - 1}], got {personal_layers}"
        )
    if personal_layers == 1:
        return layers.body_params
    return tuple(n for layer in layers.layers[:-personal_layers] for n in layer.params)


class FedPerClient(ClientMethod):
    """Global body + personal head; trains everything, uploads the body (the defaults, given
    what it shares)."""

    settings: FedPerSettings

    @classmethod
    def shares(cls, settings: FedPerSettings, layers: LayerMap) -> tuple[str, ...]:
        return body_names(layers, settings.personal_layers)

    kept = ClientMethod.unshared  # the personal head and the BatchNorm statistics


register_method("fedper", FedPerSettings, FedPerClient)
