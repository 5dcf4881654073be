from flayer.protocol.catalog import METHODS
from tests.helpers import CONF, make_config


def test_every_method_has_a_config_file_and_every_file_a_method():
    files = {p.stem for p in (CONF / "strategy").glob("*.yaml")}
    assert files == set(METHODS.names())


def test_every_method_config_composes_with_its_own_schema():
    for name in METHODS:
        cfg = make_config(f"strategy={name}")
        assert type(cfg.strategy) is METHODS.get(name).settings
        assert cfg.strategy.name == name
