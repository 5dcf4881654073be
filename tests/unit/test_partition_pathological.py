"""Pathological partitioning: each client holds only k classes; seeded; clear errors."""

import logging

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException

from flayer.config.validation import validate
from flayer.data.partitioners.pathological import ASSIGNMENTS, PathologicalConfig, pathological
from flayer.util.errors import ConfigError, DataError
from tests.helpers import make_config

LABELS = np.repeat(np.arange(10), 60)


def cfg_part(k=2, mode="first-deterministic"):
    return PathologicalConfig(classes_per_client=k, class_assignment=mode)


@pytest.mark.parametrize("mode", ASSIGNMENTS)
def test_each_client_holds_at_most_k_classes(mode):
    for k in (1, 2, 3):
        parts = pathological(LABELS, 10, cfg_part(k, mode), 2, seed=0)
        assert all(len(np.unique(LABELS[p])) <= k for p in parts)


def test_every_sample_goes_to_exactly_one_client_when_all_classes_are_drawn():
    parts = pathological(LABELS, 10, cfg_part(2), 2, seed=0)  # first class of client k is k
    everything = np.concatenate(parts)
    assert len(everything) == len(LABELS) == len(np.unique(everything))


def test_deterministic_assignment_gives_even_sizes():
    parts = pathological(LABELS, 10, cfg_part(2, "deterministic"), 2, seed=0)
    assert [len(p) for p in parts] == [60] * 10  # each class shared by two clients
    assert [sorted(set(LABELS[p])) for p in parts][9] == [0, 9]


@pytest.mark.parametrize("mode", ASSIGNMENTS)
def test_same_seed_same_split_other_seed_other_split(mode):
    a, b, c = (pathological(LABELS, 10, cfg_part(2, mode), 2, seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(np.sort(x), np.sort(y)) for x, y in zip(a, c, strict=True))


def test_classes_no_client_draws_are_left_out_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="flayer"):
        parts = pathological(LABELS, 3, cfg_part(2, "deterministic"), 2, seed=0)
    assert set(LABELS[np.concatenate(parts)]) == {0, 1, 2, 3}
    assert "no client holds classes [4, 5, 6, 7, 8, 9]" in caplog.text


@pytest.mark.parametrize("k", [0, 11])
def test_an_impossible_k_is_refused_against_the_labels_too(k):
    """Sources that learn their classes from the data know the count only at the split."""
    with pytest.raises(ConfigError, match=r"from 1 to 10 \(the data has 10 classes\)") as err:
        pathological(LABELS, 10, cfg_part(k), 2, seed=0)
    assert err.value.setting == "partition.classes_per_client"


@pytest.mark.parametrize(("k", "classes", "text"), [
    (0, 10, r"must be from 1 to 10 \(fashion-mnist has 10 classes\)"),
    (11, 10, r"must be from 1 to 10 \(fashion-mnist has 10 classes\)"),
    (0, None, "must be from 1 to the number of classes of fashion-mnist"),
])
def test_its_settings_name_the_class_count(k, classes, text):
    with pytest.raises(ConfigError, match=text) as err:
        cfg_part(k).check(make_config("partition=pathological"), 600, "fashion-mnist", classes)
    assert err.value.setting == "partition.classes_per_client"
    cfg_part(11).check(make_config("partition=pathological"), 600, "fashion-mnist", 12)


def test_its_settings_list_the_assignments():
    with pytest.raises(ConfigError, match="must be one of " + ", ".join(ASSIGNMENTS)) as err:
        cfg_part(2, "even").check(make_config("partition=pathological"), 600, "fmnist", 10)
    assert (err.value.setting, err.value.value) == ("partition.class_assignment", "even")


def test_the_summary_names_the_scheme_and_its_classes():
    assert cfg_part(3, "random").summary_fields() == {
        "partition": "pathological", "classes_per_client": 3, "class_assignment": "random"}


def test_a_minimum_the_classes_cannot_give_is_a_clear_error():
    with pytest.raises(DataError, match="client .* fewer than the least allowed.*num_clients"):
        pathological(LABELS, 10, cfg_part(1), 61, seed=0)


def test_more_shares_of_a_class_than_samples_is_a_clear_error():
    labels = np.array([0] * 50 + [1])  # class 1 has one sample but is every client's second
    with pytest.raises(DataError, match="more shares of a class than it has samples"):
        pathological(labels, 5, cfg_part(2, "deterministic"), 2, seed=0)


@pytest.mark.parametrize(("override", "setting", "text"), [
    ("partition.classes_per_client=0", "partition.classes_per_client",
     "from 1 to the number of classes of fmnist"),  # refused before the data is known
    ("partition.classes_per_client=11", "partition.classes_per_client", "from 1 to 10"),
    ("partition.class_assignment=even", "partition.class_assignment", "first-deterministic"),
])
def test_bad_settings_are_refused_by_name(fake_fmnist, cache_dir, override, setting, text):
    cfg = make_config("partition=pathological", override, f"dataset.path={fake_fmnist}",
                      f"cache_dir={cache_dir}", "num_clients=5")
    with pytest.raises(ConfigError, match=text) as err:
        validate(cfg)
    assert err.value.setting == setting
    assert not cache_dir.exists()  # refused before any data was decoded


def test_alpha_is_not_a_pathological_setting(fake_fmnist, cache_dir):
    common = (f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}", "num_clients=10")
    with pytest.raises(ConfigCompositionException, match="alpha"):
        make_config("partition=pathological", "partition.alpha=0", *common)
    validate(make_config("partition=pathological", *common))
