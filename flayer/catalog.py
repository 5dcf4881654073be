"""Every built-in method; importing this module registers them all."""

import baselines  # noqa: E402,F401  (registers the comparison methods)
import flayer.flayer.method  # noqa: E402,F401,I001  (registers "flayer")
from flayer.method import METHODS

__all__ = ["METHODS"]
