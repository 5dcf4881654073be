"""What a method is, and the registry of methods: its settings (a `MethodSettings` subclass,
the `strategy.*` settings of conf/strategy/<name>.yaml), its client side (a `ClientMethod`)
and its server side (a `MethodServer`; FedAvg's when the method changes nothing there),
registered under one name. The apps know methods only through this."""

from __future__ import annotations

from dataclasses import dataclass

from flayer.config.schema import Config, MethodSettings
from flayer.nn.layers import LayerMap
from flayer.protocol.client import ClientMethod
from flayer.protocol.server import MethodServer
from flayer.util.registry import Registry


@dataclass(frozen=True)
class Method:
    name: str
    settings: type[MethodSettings]
    client: type[ClientMethod]
    server: type[MethodServer] = MethodServer

    def build_server(self, cfg: Config, layers: LayerMap) -> MethodServer:
        """The method's server side for this run (its settings are `cfg.strategy`)."""
        return self.server(cfg, cfg.strategy, layers, self.client.shares(cfg.strategy, layers))


METHODS: Registry[Method] = Registry("method")


def register_method(name: str, settings: type[MethodSettings], client: type[ClientMethod],
                    server: type[MethodServer] = MethodServer) -> Method:
    """Makes a method choosable as `strategy=<name>`: its module calls this once, when
    flayer.protocol.catalog imports it. FedAvg's server side unless it brings its own."""
    method = Method(name=name, settings=settings, client=client, server=server)
    METHODS.register(name)(method)
    return method
