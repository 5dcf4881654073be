"""Every built-in method; importing this module registers them all."""

from flayer.method import METHODS

import flayer.flayer.method  # noqa: E402,F401,I001  (registers "flayer")
import baselines  # noqa: E402,F401  (registers the comparison methods)

__all__ = ["METHODS"]
