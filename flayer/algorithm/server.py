"""FLAYER's server side: every client re-initializes from each new global model, and the
upload declaration says how many elements of each tensor a masked reply keeps."""

from __future__ import annotations

import numpy as np

from flayer.algorithm import masking
from flayer.algorithm.settings import FlayerSettings
from flayer.protocol.server import MethodServer
from flayer.protocol.upload import TensorSpec, UploadSpec


class FlayerServer(MethodServer):
    settings: FlayerSettings

    def sync_every_round(self) -> bool:
        # Eager: every client re-initializes from each new global model, evaluated or not.
        return self.settings.local_init and self.settings.sync == "eager"

    def upload_spec(self, global_arrays: dict[str, np.ndarray]) -> UploadSpec:
        J = self.layers.num_tensors
        spec = {}
        for name, arr in global_arrays.items():
            kept = None
            if self.settings.masked_upload:
                kept = masking.kept_count(self.layers.tensor_index[name], tuple(arr.shape), J,
                                          self.settings.reference_quirks)
            spec[name] = TensorSpec(tuple(arr.shape), kept)
        return spec
