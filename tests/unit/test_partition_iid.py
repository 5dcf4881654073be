"""IID partitioning: equal random shares, seeded."""

import numpy as np
import pytest

from flayer.data.federated import client_splits
from flayer.data.partitioners.iid import IidConfig, iid
from flayer.util.errors import ConfigError, DataError
from tests.helpers import make_config

LABELS = np.repeat(np.arange(10), 101)  # 1010 samples: shares of 101 over 10, uneven over 7
CFG = IidConfig()


def test_every_sample_goes_to_exactly_one_client():
    parts = iid(LABELS, 7, CFG, 2, seed=0)
    everything = np.concatenate(parts)
    assert len(everything) == len(LABELS) == len(np.unique(everything))


def test_shares_differ_by_at_most_one_sample():
    sizes = [len(p) for p in iid(LABELS, 7, CFG, 2, seed=0)]
    assert sorted(sizes) == [144] * 5 + [145] * 2  # 1010 = 7 * 144 + 2


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = (iid(LABELS, 5, CFG, 2, seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(np.sort(x), np.sort(y)) for x, y in zip(a, c, strict=True))


def test_shares_are_shuffled_not_contiguous():
    parts = iid(LABELS, 5, CFG, 2, seed=0)
    assert all(len(np.unique(LABELS[p])) == 10 for p in parts)  # a mix of all classes


def test_a_minimum_above_the_share_is_a_clear_error():
    with pytest.raises(DataError, match="num_clients.*min_partition_size"):
        iid(LABELS, 10, CFG, 102, seed=0)


def test_runs_end_to_end_on_a_pool(fake_fmnist, cache_dir):
    cfg = make_config("partition=iid", f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}",
                      "num_clients=5")
    splits = client_splits(cfg)
    assert [len(s.train) + len(s.test) for s in splits] == [140] * 5


def test_its_settings_check_the_shared_rules():
    cfg = make_config("partition=iid", "num_clients=20")
    IidConfig().check(cfg, 1010, "fashion-mnist", 10)
    with pytest.raises(ConfigError, match=r"20 clients x 60 samples exceed the 1010") as err:
        IidConfig(min_partition_size=60).check(cfg, 1010, "fashion-mnist", 10)
    assert err.value.setting == "partition.min_partition_size"


def test_the_summary_names_only_the_scheme():
    assert CFG.summary_fields() == {"partition": "iid"}
