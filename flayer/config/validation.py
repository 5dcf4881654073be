"""Checks every setting before any simulation starts; raises ConfigError naming the setting,
its value and what is allowed (DataError when the data cannot be split as asked)."""

from __future__ import annotations

from flayer.config.checks import check_settings
from flayer.config.schema import Config
from flayer.data.federated import client_splits, dataset, pool_size, source_of
from flayer.data.source import DataSource
from flayer.data.subset import described, refuse_fraction
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.protocol.catalog import METHODS
from flayer.util.errors import ConfigError, DamagedFile, DataError, require


def validate(cfg: Config) -> None:
    check_settings(cfg)  # those that need neither data nor model (no torch): first
    if cfg.device == "cuda":
        import torch

        require(torch.cuda.is_available(), "device", cfg.device,
                 "CUDA is not available on this machine; use auto or cpu")
    source = source_of(cfg)
    cfg.shift.check_samples(cfg.dataset.name, source.tokens)  # before any data is read
    if not source.partitioned:
        refuse_fraction(cfg.dataset.fraction, f"{source.name} data, which brings its own clients")
    try:
        source.check()
    except DamagedFile:
        raise  # the data is there but damaged: named as it is
    except DataError as exc:
        raise ConfigError("dataset.path", cfg.dataset.path, str(exc)) from None
    if source.partitioned:
        # a column the scheme splits by (partition=natural) must be one the data has
        cfg.partition.split_column(source.name, source.client_columns)
        cfg.partition.check(cfg, pool_size(cfg), described(source.name, cfg.dataset.fraction),
                            _known_classes(source))
    else:
        source.check_clients(cfg.num_clients)
    # The split itself (cached on disk): a partitioner that cannot satisfy the settings fails
    # here with DataError, before any simulation starts, not inside a client actor (one that
    # splits by a client column, before the pool is decoded).
    client_splits(cfg)
    spec = dataset(cfg).spec
    cfg.shift.check_samples(cfg.dataset.name, spec.vocab_size is not None)  # a PFLlib folder's
    model = build_model(cfg, spec)
    METHODS.get(cfg.strategy.name).settings.check(cfg.strategy, cfg, LayerMap(model))


def _known_classes(source: DataSource) -> int | None:
    """The number of classes where the dataset fixes it without data (else None: the
    partitioner then checks against the labels themselves)."""
    spec = source.static_spec(source.cfg)
    return spec.num_classes if spec is not None else None
