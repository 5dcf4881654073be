"""FLAYER as a method: its settings, client side and server side, registered as "flayer"."""

from flayer.algorithm.client import FlayerClient
from flayer.algorithm.server import FlayerServer
from flayer.algorithm.settings import FlayerSettings
from flayer.protocol.method import register_method

register_method("flayer", FlayerSettings, FlayerClient, FlayerServer)
