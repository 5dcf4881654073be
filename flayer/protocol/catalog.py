"""Every built-in method; importing this module registers them all (FLAYER, and each module
of the `baselines` package). It imports torch and Flower: what needs only the methods'
settings (Hydra's schemas, the checks of a config) finds them in flayer.config.store."""

import baselines
import flayer.algorithm.method  # noqa: F401  (registers "flayer")
from flayer.protocol.method import METHODS
from flayer.util.registry import import_modules

import_modules(baselines.__name__, baselines.__path__)  # each registers its method

__all__ = ["METHODS"]
