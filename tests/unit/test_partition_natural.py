"""Natural partitions: the clients are the values of a column of the data (FEMNIST's writers),
a seeded sample of them, each split into train and test; bad settings are refused, naming
them, before the pool is decoded."""

import numpy as np
import pytest

from flayer.config.validation import validate
from flayer.data import cache
from flayer.data.federated import client_splits, load_client
from flayer.data.partitioners.natural import NaturalConfig, natural
from flayer.util.errors import ConfigError, DataError
from tests import hubdata
from tests.helpers import make_config

# 6 clients named by strings, of sizes 7, 3, 1, 12, 5, 2, their samples interleaved
SIZES = {"w3": 7, "w0": 3, "w5": 1, "w1": 12, "w4": 5, "w2": 2}
RNG = np.random.default_rng(0)
CLIENTS = RNG.permutation(np.array([w for w, n in SIZES.items() for _ in range(n)],
                                   dtype=object))
CFG = NaturalConfig()


def owners(parts):
    """The one client value each part holds (a part mixing clients fails here)."""
    held = [set(CLIENTS[p]) for p in parts]
    assert all(len(h) == 1 for h in held)
    return [h.pop() for h in held]


def test_each_client_is_all_samples_of_one_value():
    parts = natural(CLIENTS, 5, CFG, 2, seed=0)  # w5 (1 sample) is too small
    names = owners(parts)
    assert sorted(names) == ["w0", "w1", "w2", "w3", "w4"]
    for name, part in zip(names, parts, strict=True):
        np.testing.assert_array_equal(np.sort(part), np.flatnonzero(name == CLIENTS))
        assert len(part) == SIZES[name]


def test_the_least_size_leaves_small_clients_out():
    assert sorted(owners(natural(CLIENTS, 3, CFG, 5, seed=0))) == ["w1", "w3", "w4"]
    with pytest.raises(ConfigError, match=r"at most 3: the data has 6 clients.*at least 5") as e:
        natural(CLIENTS, 4, CFG, 5, seed=0)
    assert e.value.setting == "num_clients"


def test_the_choice_is_a_seeded_sample_and_fewer_clients_are_the_first_of_it():
    five = owners(natural(CLIENTS, 5, CFG, 2, seed=0))
    assert owners(natural(CLIENTS, 5, CFG, 2, seed=0)) == five
    assert owners(natural(CLIENTS, 3, CFG, 2, seed=0)) == five[:3]
    others = [owners(natural(CLIENTS, 5, CFG, 2, seed=s)) for s in (1, 2, 3)]
    assert any(o != five for o in others)  # the seed orders them
    assert five != sorted(five, key=lambda w: -SIZES[w])  # not the largest first


def test_numbers_name_clients_too():
    hsf = np.repeat(np.arange(4), [3, 4, 5, 6])  # an integer column (FEMNIST's hsf_id)
    parts = natural(hsf, 4, CFG, 2, seed=0)
    assert sorted(len(p) for p in parts) == [3, 4, 5, 6]
    assert all(len(set(hsf[p])) == 1 for p in parts)


def test_the_column_is_the_setting_or_the_datasets_first():
    offered = ("writer_id", "hsf_id")
    assert NaturalConfig().split_column("femnist", offered) == "writer_id"
    assert NaturalConfig(partition_by="hsf_id").split_column("femnist", offered) == "hsf_id"
    with pytest.raises(ConfigError, match="one of writer_id, hsf_id .*femnist") as err:
        NaturalConfig(partition_by="user").split_column("femnist", offered)
    assert err.value.setting == "partition.partition_by"
    with pytest.raises(ConfigError, match=r"dataset=cifar10 has no client column.*dirichlet"):
        NaturalConfig().split_column("cifar10", ())


def test_settings_without_data():
    assert NaturalConfig().least_size(814_277, 20) == 2  # not a share of the pool
    assert NaturalConfig(min_partition_size=9).least_size(814_277, 20) == 9
    cfg = make_config("partition=natural", "dataset.fraction=0.5")
    with pytest.raises(ConfigError, match="must be 1 with partition=natural") as err:
        cfg.partition.check_settings(cfg)
    assert err.value.setting == "dataset.fraction"
    assert NaturalConfig(partition_by="hsf_id").summary_fields() == {
        "partition": "natural", "partition_by": "hsf_id"}


# --- through the run's checks and splits, on FEMNIST in the hub's schema -------------------

WRITERS = (12, 5, 9, 1, 30, 8)  # writer k holds WRITERS[k] samples; writer 3 is too small


@pytest.fixture(autouse=True)
def fresh_reads():
    cache.forget()
    yield
    cache.forget()


@pytest.fixture
def femnist(tmp_path):
    return hubdata.write_femnist(tmp_path / "femnist", sizes=WRITERS, fmt="parquet")


def femnist_config(folder, cache_dir, *overrides):
    return make_config("dataset=femnist", f"dataset.path={folder}", f"cache_dir={cache_dir}",
                       "partition=natural", "num_clients=4", *overrides)


def test_every_client_is_one_writer_split_75_25(femnist, cache_dir):
    cfg = femnist_config(femnist, cache_dir)
    validate(cfg)
    writers = np.repeat(np.arange(len(WRITERS)), WRITERS)  # the hub's rows, writer by writer
    seen = set()
    for split in client_splits(cfg):
        both = np.concatenate([split.train, split.test])
        (writer,) = set(writers[both])
        np.testing.assert_array_equal(np.sort(both), np.flatnonzero(writers == writer))
        n = WRITERS[writer]
        assert len(split.test) == int(np.ceil(0.25 * n)) and not set(split.train) & set(
            split.test)
        seen.add(int(writer))
    assert len(seen) == 4 and 3 not in seen


def test_the_per_client_split_is_seeded(femnist, cache_dir, tmp_path):
    a = client_splits(femnist_config(femnist, cache_dir, "num_clients=5"))
    b = client_splits(femnist_config(femnist, tmp_path / "other", "num_clients=5"))
    c = client_splits(femnist_config(femnist, tmp_path / "third", "num_clients=5",
                                     "partition.train_fraction=0.5"))
    for x, y, z in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(x.train, y.train)
        np.testing.assert_array_equal(np.sort(np.concatenate([x.train, x.test])),
                                      np.sort(np.concatenate([z.train, z.test])))
        assert len(z.test) >= len(x.test)


def test_another_client_column_groups_the_samples_by_it(tmp_path, cache_dir):
    sizes = (3, 3, 3, 3, 3, 3, 3, 3, 4, 5)  # writers 8 and 9 share hsf_id 0 and 1 with 0, 1
    folder = hubdata.write_femnist(tmp_path / "femnist", sizes=sizes)
    cfg = femnist_config(folder, cache_dir, "partition.partition_by=hsf_id", "num_clients=8")
    validate(cfg)
    hsf = np.repeat(np.arange(len(sizes)) % 8, sizes)
    splits = client_splits(cfg)
    assert sorted(len(s.train) + len(s.test) for s in splits) == [3] * 6 + [7, 8]
    for split in splits:
        assert len(set(hsf[np.concatenate([split.train, split.test])])) == 1
    assert load_client(cfg, 0).x_train.shape[1:] == (1, 28, 28)


@pytest.mark.parametrize(("override", "setting", "text"), [
    ("partition.partition_by=user_id", "partition.partition_by",
     "must be one of writer_id, hsf_id"),
    ("num_clients=6", "num_clients", "must be at most 5: the data has 6 clients"),
    ("partition.min_partition_size=9", "num_clients", "at most 3.*at least 9 samples"),
])
def test_bad_settings_are_refused_before_the_pool_is_decoded(femnist, cache_dir, override,
                                                             setting, text):
    with pytest.raises(ConfigError, match=text) as err:
        validate(femnist_config(femnist, cache_dir, override))
    assert err.value.setting == setting
    assert not (cache_dir / "pools").exists()


def test_a_dataset_without_clients_refuses_the_scheme_naming_both(tmp_path, cache_dir):
    folder = hubdata.write_cifar10(tmp_path / "cifar10", n_per_split=4)
    cfg = make_config("dataset=cifar10", f"dataset.path={folder}", f"cache_dir={cache_dir}",
                      "partition=natural", "num_clients=2")
    with pytest.raises(ConfigError, match=r"partition='natural'.*dataset=cifar10") as err:
        validate(cfg)
    assert err.value.setting == "partition"
    assert not cache_dir.exists()


def test_an_image_folder_has_no_writers(tmp_path, cache_dir):
    data = hubdata.femnist_dict(sizes=(6, 6))
    folder = hubdata.write(data, tmp_path / "images", "imagefolder")
    with pytest.raises(DataError, match="image folder.*no column writer_id.*save_to_disk"):
        validate(femnist_config(folder, cache_dir, "num_clients=2"))
    assert not (cache_dir / "pools").exists()
    # the label schemes still run on it
    validate(make_config("dataset=femnist", f"dataset.path={folder}",
                         f"cache_dir={cache_dir}", "partition=iid", "num_clients=2"))
