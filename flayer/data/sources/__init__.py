"""The built-in data sources, one module per dataset, each registering its source class in
`DATASETS` (flayer.data.source) when imported. Every module of this package is imported here,
so adding a dataset means adding its module, its `conf/dataset/<name>.yaml` and its test.

Import `DATASETS` from here (not from flayer.data.source) to get it filled."""

from flayer.data.source import DATASETS
from flayer.util.registry import import_modules

import_modules(__name__, __path__)  # each dataset's module registers its source

__all__ = ["DATASETS"]
