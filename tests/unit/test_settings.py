"""Every method's settings: bad values are refused with the setting named, defaults pass,
and methods that split features from the classifier refuse a model without a Linear head."""

import importlib
import pkgutil
from dataclasses import fields

import pytest
from torch import nn

import tests.methods
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.protocol.catalog import METHODS
from flayer.util.errors import ConfigError
from tests.helpers import FMNIST_SPEC, make_config


def declared_bad_settings() -> dict[str, list[str]]:
    """Each method's bad settings, as its own tests declare them (`BAD_SETTINGS = {name:
    [override, ...]}` in a module of tests/methods), so that a new method's test module is all
    it adds."""
    found: dict[str, list[str]] = {}
    for module in pkgutil.iter_modules(tests.methods.__path__):
        declared = getattr(importlib.import_module(f"tests.methods.{module.name}"),
                           "BAD_SETTINGS", {})
        for name, overrides in declared.items():
            found.setdefault(name, []).extend(overrides)
    return found


BAD = declared_bad_settings()
CASES = [(method, override) for method, overrides in BAD.items() for override in overrides]


def check(cfg, model=None):
    model = model if model is not None else build_model(cfg, FMNIST_SPEC)
    cfg.strategy.check(cfg, LayerMap(model))


@pytest.mark.parametrize(("method", "override"), CASES)
def test_a_bad_setting_is_refused_by_name(method, override):
    with pytest.raises(ConfigError) as err:
        check(make_config(f"strategy={method}", override))
    assert err.value.setting == override.split("=")[0]


@pytest.mark.parametrize("method", METHODS.names())
def test_defaults_pass(method):
    check(make_config(f"strategy={method}"))


def test_every_method_with_settings_has_bad_cases():
    with_settings = {name for name in METHODS.names()
                     if {f.name for f in fields(METHODS.get(name).settings)} - {"name"}}
    assert set(BAD) == with_settings


@pytest.mark.parametrize("method", ["fedcp", "feddbe", "fedbabu", "fedrod", "fedproto",
                                    "gpfl"])
def test_a_head_that_is_not_linear_is_refused(method):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16))
    with pytest.raises(ConfigError, match="not one Linear head"):
        check(make_config(f"strategy={method}"), model)
