"""Every method's settings: bad values are refused with the setting named, defaults pass,
and methods that split features from the classifier refuse a model without a Linear head."""

from dataclasses import fields

import pytest
from torch import nn

from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.protocol.catalog import METHODS
from flayer.util.errors import ConfigError
from tests.helpers import FMNIST_SPEC, make_config

BAD = {
    "flayer": ["strategy.accuracy_source=train", "strategy.val_fraction=0", "strategy.P=0",
               "strategy.P=9", "strategy.s=0", "strategy.c=-1", "strategy.head_rate=0"],
    "fedper": ["strategy.personal_layers=0", "strategy.personal_layers=-1",
               "strategy.personal_layers=4"],
    "fedrep": ["strategy.head_epochs=0", "strategy.head_epochs=-2",
               "strategy.personal_layers=0", "strategy.personal_layers=4"],
    "ditto": ["strategy.lam=-0.1", "strategy.lam=inf", "strategy.personal_epochs=0"],
    "fedala": ["strategy.eta_w=0", "strategy.eta_w=-1", "strategy.rand_percent=0",
               "strategy.rand_percent=101", "strategy.P=0", "strategy.P=9",
               "strategy.threshold=0", "strategy.num_pre_loss=1",
               "strategy.max_start_passes=0"],
    "fedcp": ["strategy.lam=-1", "strategy.tau=0"],
    "feddbe": ["strategy.momentum=0", "strategy.momentum=1.5", "strategy.kappa=-1"],
    "fedprox": ["strategy.mu=-0.1", "strategy.mu=inf"],
    "scaffold": ["strategy.server_lr=0", "strategy.server_lr=-1", "strategy.server_lr=inf"],
    "lgfedavg": ["strategy.global_layers=0", "strategy.global_layers=4",
                 "strategy.global_layers=-1"],
    "fedbabu": ["strategy.fine_tuning_epochs=-1"],
    "apfl": ["strategy.alpha=-0.1", "strategy.alpha=1.5", "strategy.alpha=nan"],
    "perfedavg": ["strategy.beta=0", "strategy.beta=-1", "strategy.beta=inf"],
    "pfedme": ["strategy.K=0", "strategy.p_learning_rate=0", "strategy.lamda=-1",
               "strategy.beta=0", "strategy.p_learning_rate=0.5"],
    "fedproto": ["strategy.lamda=-1", "strategy.lamda=inf"],
    "gpfl": ["strategy.lam=-1", "strategy.lam=inf", "strategy.mu=-0.1"],
}
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
