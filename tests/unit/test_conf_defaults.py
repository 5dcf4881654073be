"""Every option yaml in conf/ says what its schema says: a value the yaml shows must equal the
schema's default (the yaml is what runs, the dataclass what code and tests construct), so the
two can never drift apart. Values a schema leaves MISSING are the yaml's to give."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from flayer.config.store import register_schemas
from tests.helpers import CONF

GROUPS = ("strategy", "dataset", "model", "partition", "shift", "backend")
# One schema serves every dataset, and a text dataset's sample length is its own (AG News 200
# tokens, the schema's default; Shakespeare LEAF's 80 characters): its yaml says which.
OWN_VALUES = {"dataset": {"max_len"}}
OPTIONS = sorted((g, p.stem) for g in GROUPS for p in (CONF / g).glob("*.yaml"))


def drift(group: str, file: Path) -> list[str]:
    """Where the yaml's values differ from its schema's defaults (the schema is the first
    entry of its defaults list)."""
    register_schemas()
    yaml = OmegaConf.load(file)
    schema_name = str(yaml.defaults[0]).lstrip("/")  # schemas are stored at the top level
    if not schema_name.endswith("_schema"):
        return [f"{file.name} names no schema first in its defaults"]
    schema = ConfigStore.instance().load(f"{schema_name}.yaml").node
    settings = set(schema.keys())  # `in schema` is False for a MISSING field
    problems = []
    for key, value in yaml.items():
        if key == "defaults":
            continue
        if key not in settings:
            problems.append(f"{key} is not a setting of {schema_name}")
        elif (not OmegaConf.is_missing(schema, key) and value != schema[key]
              and key not in OWN_VALUES.get(group, set())):
            problems.append(f"{key}={value!r}, the schema's default is {schema[key]!r}")
    return problems


@pytest.mark.parametrize("group, option", OPTIONS)
def test_every_value_a_yaml_shows_is_its_schemas_default(group, option):
    file = CONF / group / f"{option}.yaml"
    assert OmegaConf.load(file).name == option  # an option's name is its file's name
    assert drift(group, file) == []


def test_a_drifted_or_unknown_value_is_caught(tmp_path):
    text = (CONF / "strategy" / "ditto.yaml").read_text()
    drifted = tmp_path / "ditto.yaml"
    drifted.write_text(text.replace("lam: 0.1", "lam: 0.2") + "mu: 1\n")
    assert drift("strategy", drifted) == ["lam=0.2, the schema's default is 0.1",
                                          "mu is not a setting of strategy_ditto_schema"]
