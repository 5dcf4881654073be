"""FLAYER as a method: its settings, client side and server side, registered as "flayer"."""

from flayer.flayer.client import FlayerClient
from flayer.flayer.server import FlayerStrategy
from flayer.flayer.settings import FlayerConfig
from flayer.method import register_method

register_method("flayer", FlayerConfig, FlayerClient, FlayerStrategy)
