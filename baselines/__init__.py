"""Comparison methods: one module each (client side + strategy + settings), registered by
name when imported. Every module in this package is imported, so adding a method means
adding its module here and its `conf/strategy/<name>.yaml`."""

from flayer.registry import import_modules

import_modules(__name__, __path__)
