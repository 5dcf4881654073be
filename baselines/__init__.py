"""Comparison methods: one module each (client side + strategy + settings), registered by
name when imported. Every module in this package is imported, so adding a method means
adding its module here and its `conf/strategy/<name>.yaml`."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
