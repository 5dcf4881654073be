"""LG-FedAvg (Liang, Liu, Ziyin, Allen, Auerbach, Brent, Salakhutdinov and Morency, "Think
Locally, Act Globally: Federated Learning with Local and Global Representations",
arXiv 2001.01523, 2020): local representations, a global head.

The mirror of FedPer (baselines/fedper.py). Each client keeps its lower layers (the local
representation, every layer but the top `global_layers` by the project's layer notion,
`flayer.nn.layers.LayerMap`); they never leave the client. The server holds, sends and averages
only the top layers (the global part; by default the head). Each round a client loads the
received global layers into its own model (keeping its own lower layers), trains the whole
model for E epochs (`local_epochs`) of plain SGD at the run's learning rate, as the paper's
local update and PFLlib do, and uploads the global layers. The server takes their
sample-weighted mean. A client's accuracy is that of its own model: its own representation
with the global head. Uploaded bytes are therefore those of the head only.

A client that arrives late (`new_clients`) has no representation of its own yet: the received
global head sits on the run's initial lower layers, and the whole model trains for
`new_client_epochs` epochs (LG-FedAvg's local update) before it is evaluated.

Settings (conf/strategy/lgfedavg.yaml):
  global_layers  how many top layers are global (shared and averaged), default 1: the head,
                 as in PFLlib (`model.head`). The authors' scripts share the top 2 layers of
                 their CIFAR-10 CNN and the top 3 of their MNIST MLP. At least one layer must
                 stay local.

Where the authors' code differs, we follow PFLlib, as every method here does:
  - the authors start LG-FedAvg from a model trained by FedAvg beforehand; here every method
    starts from the same initial model (the run's seeded `build_model`), as in PFLlib;
  - the authors average the global layers uniformly over the round's clients and report each
    client's best model over the rounds (chosen on its test data); here the mean is
    sample-weighted, as in PFLlib, and each round's model is the one evaluated.
"""

from __future__ import annotations

from baselines.fedper import body_names
from baselines.settings.lgfedavg import LGFedAvgSettings
from flayer.nn.layers import LayerMap
from flayer.protocol.client import ClientMethod
from flayer.protocol.method import register_method


def global_names(layers: LayerMap, global_layers: int = 1) -> tuple[str, ...]:
    """The global parameter names: the top `global_layers` layers, i.e. what FedPer's split
    (`body_names` with that many personal layers) leaves out of the body."""
    local = set(body_names(layers, global_layers))
    return tuple(n for n in layers.param_names if n not in local)


class LGFedAvgClient(ClientMethod):
    """Personal lower layers + global top layers; trains everything, uploads the top (the
    defaults, given what it shares)."""

    settings: LGFedAvgSettings

    @classmethod
    def shares(cls, settings: LGFedAvgSettings, layers: LayerMap) -> tuple[str, ...]:
        return global_names(layers, settings.global_layers)

    kept = ClientMethod.unshared  # the lower layers and the BatchNorm statistics


register_method("lgfedavg", LGFedAvgSettings, LGFedAvgClient)
