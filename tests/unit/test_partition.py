"""Dirichlet partitioning and its settings, the partitioner registry, per-client splits and
the cache."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from flayer.config.schema import PartitionConfig
from flayer.config.store import option_schemas, schema_name
from flayer.config.validation import validate
from flayer.data.federated import client_splits, load_client, splits_file
from flayer.data.partitioners import PARTITIONERS
from flayer.data.partitioners.dirichlet import DirichletConfig, dirichlet
from flayer.data.split import holdout, train_test_split
from flayer.util.errors import ConfigError, DataError
from tests.helpers import CONF, make_config

LABELS = np.repeat(np.arange(10), 300)


def cfg_part(alpha=0.1):
    return DirichletConfig(alpha=alpha)


def test_dirichlet_is_deterministic_for_a_seed_and_differs_across_seeds():
    a = dirichlet(LABELS, 10, cfg_part(), 40, seed=3)
    b = dirichlet(LABELS, 10, cfg_part(), 40, seed=3)
    c = dirichlet(LABELS, 10, cfg_part(), 40, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_covers_the_pool_once_and_respects_the_minimum():
    parts = dirichlet(LABELS, 10, cfg_part(), 40, seed=0)
    everything = np.concatenate(parts)
    assert len(everything) == len(LABELS) == len(np.unique(everything))
    assert min(len(p) for p in parts) >= 40


def test_small_alpha_skews_labels():
    parts = dirichlet(LABELS, 10, cfg_part(0.1), 20, seed=0)
    classes = [len(np.unique(LABELS[p])) for p in parts]
    assert np.mean(classes) < 6  # IID would give ~10 classes per client


def test_impossible_minimum_is_a_clear_error():
    with pytest.raises(DataError, match="num_clients"):
        dirichlet(LABELS, 30, cfg_part(0.01), 99, seed=0)


def test_default_minimum_matches_pfllib():
    least = PartitionConfig(name="any").least_size
    assert least(70_000, 20) == 40
    assert least(70_000, 1000) == 35
    assert least(1_000, 100) == 5
    assert PartitionConfig(name="any", min_partition_size=7).least_size(70_000, 20) == 7


@pytest.mark.parametrize("alpha", [0, -1, float("nan")])
def test_a_bad_alpha_is_refused_by_its_settings(alpha):
    with pytest.raises(ConfigError, match="must be > 0") as err:
        cfg_part(alpha).check(make_config(), 70_000, "fashion-mnist", 10)
    assert err.value.setting == "partition.alpha"


def test_shared_rules_are_checked_for_every_scheme():
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\)") as err:
        DirichletConfig(train_fraction=1.0).check(make_config(), 70_000, "fashion-mnist", 10)
    assert err.value.setting == "partition.train_fraction"


def test_the_summary_names_the_scheme_and_alpha():
    assert cfg_part(0.5).summary_fields() == {"partition": "dirichlet", "alpha": 0.5}


def test_every_scheme_has_a_schema_its_yaml_names():
    schemas = option_schemas()
    assert {"dirichlet", "iid", "pathological"} <= set(PARTITIONERS)
    for name in PARTITIONERS:
        settings = PARTITIONERS.get(name).settings
        assert schemas[schema_name("partition", name)] is settings and settings.name == name
        assert issubclass(settings, PartitionConfig)
        conf = OmegaConf.load(CONF / "partition" / f"{name}.yaml")
        assert conf["defaults"][0] == f"/{schema_name('partition', name)}"
        assert conf["name"] == name
    assert sorted(f.stem for f in (CONF / "partition").glob("*.yaml")) == PARTITIONERS.names()


@pytest.mark.parametrize(("override", "text"), [
    ("partition.name=nope", "must be one of dirichlet, iid, natural, pathological"),
    ("partition.name=iid", "DirichletConfig.*partition=iid"),
])
def test_a_scheme_name_without_its_settings_is_refused(fake_fmnist, cache_dir, override, text):
    cfg = make_config(override, f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}",
                      "num_clients=5")
    with pytest.raises(ConfigError, match=text) as err:
        validate(cfg)
    assert err.value.setting == "partition.name"
    assert not cache_dir.exists()


def test_train_test_split_is_75_25_and_seeded():
    idx = np.arange(100, 110)
    s1 = train_test_split(idx, 0.75, np.random.default_rng(0))
    s2 = train_test_split(idx, 0.75, np.random.default_rng(0))
    assert len(s1.train) == 7 and len(s1.test) == 3  # sklearn's floor / ceil
    assert np.array_equal(s1.train, s2.train)
    assert sorted(np.concatenate([s1.train, s1.test])) == list(idx)


def test_holdout_takes_a_share_of_training_data():
    kept, val = holdout(np.arange(50), 0.1, np.random.default_rng(0))
    assert len(val) == 5 and len(kept) == 45 and not set(kept) & set(val)


def test_client_splits_are_cached_and_reused(fake_fmnist, cache_dir):
    cfg = make_config(f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}", "num_clients=5")
    first = client_splits(cfg)
    file = splits_file(cfg)
    assert file.exists()
    stamp = file.stat().st_mtime_ns
    second = client_splits(cfg)
    assert file.stat().st_mtime_ns == stamp
    assert all(np.array_equal(a.train, b.train) for a, b in zip(first, second, strict=True))
    assert sum(len(s.train) + len(s.test) for s in first) == 700
    # another alpha is another cache entry
    other = make_config(f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}",
                        "num_clients=5", "partition.alpha=0.5")
    assert splits_file(other) != file


def test_client_data_is_compact_and_scaled_on_use(fake_fmnist, cache_dir):
    cfg = make_config(f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}", "num_clients=5")
    data = load_client(cfg, 2)
    assert data.x_train.dtype.is_floating_point is False
    assert load_client(cfg, 2) is data  # loaded once per process
    x = data.to_input(data.x_train[:4])
    assert x.min() >= -1 and x.max() <= 1


def test_dirichlet_at_1000_clients_stops_naming_the_settings_to_change():
    """Fashion-MNIST's size, 1,000 clients, alpha 0.1 and the default least size (35): the
    split cannot be made, and the error says which settings would let it (run.py: exit 2)."""
    labels = np.repeat(np.arange(10), 7000)
    with pytest.raises(DataError) as err:
        PARTITIONERS.get("dirichlet").split(labels, 1000, DirichletConfig(alpha=0.1), 35, 0)
    message = str(err.value)
    for setting in ("num_clients", "partition.alpha", "partition.min_partition_size"):
        assert setting in message
