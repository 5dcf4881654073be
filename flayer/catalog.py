"""Every built-in method; importing this module registers them all (FLAYER, and each module
of the `baselines` package)."""

import baselines  # noqa: F401  (registers the comparison methods)
import flayer.flayer  # noqa: F401  (registers "flayer")
from flayer.method import METHODS

__all__ = ["METHODS"]
