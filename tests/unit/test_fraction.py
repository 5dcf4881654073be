"""dataset.fraction: the clients are cut from a seeded share of the pool, the whole pool's
splits stay as they were, and data that is not one pool refuses a share."""

import hashlib
import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from flayer.config.compose import compose_dict
from flayer.config.validation import validate
from flayer.data.federated import client_splits, splits_file
from flayer.data.node import load_node_data
from flayer.data.subset import pool_subset, subset_size
from flayer.results.runs import load_run
from flayer.results.statistics import group_runs
from flayer.run.folder import run_info
from flayer.util.errors import ConfigError
from tests.helpers import make_config, require_real_fmnist, write_fake_fmnist
from tests.localgrid import run_local
from tests.pfllibdata import image_clients, write_pfllib

POOL = 700  # write_fake_fmnist's default 600 + 100 samples


def all_indices(splits) -> np.ndarray:
    return np.concatenate([np.concatenate([s.train, s.test]) for s in splits])


def test_the_share_is_seeded_repeatable_sorted_and_of_its_size():
    share = pool_subset(70_000, 0.1, seed=0)
    assert len(share) == 7_000 == subset_size(70_000, 0.1)
    assert np.array_equal(share, np.unique(share)) and share[0] >= 0 and share[-1] < 70_000
    assert np.array_equal(share, pool_subset(70_000, 0.1, seed=0))
    assert not np.array_equal(share, pool_subset(70_000, 0.1, seed=1))
    assert pool_subset(70_000, 1.0, seed=0) is None and subset_size(70_000, 1.0) == 70_000
    assert subset_size(70_000, 1e-9) == 1


def test_clients_are_cut_from_the_share_alone(small):
    cfg = small("dataset.fraction=0.5")
    validate(cfg)
    splits = client_splits(cfg)
    used = all_indices(splits)
    assert len(used) == len(np.unique(used)) == subset_size(POOL, 0.5) == 350
    assert set(used) == set(pool_subset(POOL, 0.5, cfg.seed))
    for s in splits:
        assert len(s.train) and len(s.test) and not set(s.train) & set(s.test)


def test_the_share_follows_the_run_seed_and_repeats(small, tmp_path):
    first = all_indices(client_splits(small("dataset.fraction=0.5")))
    again = all_indices(client_splits(small("dataset.fraction=0.5",
                                            f"cache_dir={tmp_path / 'other-cache'}")))
    other = all_indices(client_splits(small("dataset.fraction=0.5", "seed=1")))
    assert np.array_equal(first, again)
    assert set(first) != set(other)


def test_each_fraction_has_its_own_splits_file(small):
    files = {f: splits_file(small(f"dataset.fraction={f}")) for f in (0.25, 0.5, 1.0)}
    assert len(set(files.values())) == 3
    assert [len(all_indices(client_splits(small(f"dataset.fraction={f}")))) for f in files] == [
        175, 350, POOL]


def test_the_whole_pool_keeps_its_splits_file_name_and_content(tmp_path):
    # the file name and the indices that the settings below gave before dataset.fraction
    # existed: existing caches stay valid and every number stays as it was
    data = write_fake_fmnist(tmp_path / "fmnist", gz=False)
    for fraction in ([], ["dataset.fraction=1.0"]):
        cfg = make_config(f"dataset.path={data}", f"cache_dir={tmp_path / 'cache'}",
                          "num_clients=4", "partition.alpha=1.0", *fraction)
        digest = hashlib.sha256()
        for s in client_splits(cfg):
            digest.update(s.train.astype(np.int64).tobytes())
            digest.update(s.test.astype(np.int64).tobytes())
        assert splits_file(cfg).name == "fmnist-dirichlet-d9630038a3f0a1693341.npz"
        assert digest.hexdigest()[:16] == "4d69286964d45840"


@pytest.mark.parametrize("fraction", ["0", "1.5", "-1"])
def test_a_fraction_outside_0_1_is_refused(small, fraction):
    with pytest.raises(ConfigError, match=r"bad setting dataset\.fraction=.*must be in \(0, 1\]"):
        validate(small(f"dataset.fraction={fraction}"))


def test_a_share_too_small_for_the_clients_names_the_reduced_pool(small):
    # 1% of 700 samples: 7, room for at most 3 clients with a train and a test sample each
    with pytest.raises(ConfigError) as err:
        validate(small("dataset.fraction=0.01", "num_clients=4"))
    assert err.value.setting == "num_clients"
    assert "dataset.fraction=0.01 has 7 samples: at most 3 clients" in str(err.value)


def test_a_pfllib_folder_refuses_a_share(tmp_path, cache_dir):
    folder = write_pfllib(tmp_path / "Cifar", image_clients([(5, 2), (8, 3)]), num_classes=3)
    cfg = make_config("dataset=pfllib", f"dataset.path={folder}", "num_clients=2",
                      f"cache_dir={cache_dir}", "dataset.fraction=0.5")
    with pytest.raises(ConfigError, match=r"dataset\.fraction=0\.5: must be 1 for pfllib data"):
        validate(cfg)


def test_a_nodes_own_data_refuses_a_share(small, fake_fmnist):
    with pytest.raises(ConfigError, match=r"dataset\.fraction=0\.5: must be 1 for a node's own"):
        load_node_data(small("dataset.fraction=0.5"), str(fake_fmnist), 0)


def test_a_run_on_a_share_trains_every_client_on_its_samples(small, single_thread):
    cfg = small("dataset.fraction=0.5")
    validate(cfg)
    _, records, _ = run_local(cfg)
    assert [r.round for r in records] == [0, 1, 2]
    assert all(r.failures == 0 for r in records) and records[-1].trained == 3
    final = sorted(records[-1].clients, key=lambda c: c.partition_id)
    assert [c.num_test for c in final] == [len(s.test) for s in client_splits(cfg)]
    assert len(all_indices(client_splits(cfg))) == 350
    assert all(np.isfinite(c.accuracy) for c in final)


def test_summary_shows_a_share_and_the_report_keeps_shares_apart(tmp_path):
    assert "dataset_fraction" not in run_info(make_config())
    for name, fraction in (("whole", 1.0), ("half", 0.5)):
        overrides = ["strategy=fedavg", f"dataset.fraction={fraction}"]
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(OmegaConf.to_yaml(compose_dict(overrides), resolve=True))
        info = run_info(make_config(*overrides))
        (run / "summary.json").write_text(json.dumps(info))
        assert info.get("dataset_fraction") == (0.5 if fraction < 1 else None)
    groups = group_runs([load_run(tmp_path / "whole"), load_run(tmp_path / "half")])
    assert sorted(g.label for g in groups) == ["fedavg (dataset.fraction=0.5)",
                                               "fedavg (dataset.fraction=1.0)"]


def test_the_smoke_preset_is_a_small_share_of_the_real_data(cache_dir):
    cfg = make_config("+experiment=smoke", f"cache_dir={cache_dir}")
    assert (cfg.dataset.name, cfg.model.name, cfg.dataset.path) == ("fmnist", "cnn", None)
    assert 0 < cfg.dataset.fraction < 1 and cfg.num_clients <= 10 and cfg.num_rounds <= 10
    require_real_fmnist()
    validate(cfg)
    assert len(all_indices(client_splits(cfg))) == subset_size(70_000, cfg.dataset.fraction)


def test_a_run_saved_before_the_setting_groups_with_the_whole_pool(tmp_path):
    for name, drop in (("old", True), ("new", False)):
        config = OmegaConf.to_container(compose_dict(["strategy=fedavg"]), resolve=True)
        if drop:  # what a config.yaml written before dataset.fraction holds
            del config["dataset"]["fraction"]
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(OmegaConf.to_yaml(config))
        (tmp_path / name / "summary.json").write_text(json.dumps({"method": "fedavg"}))
    groups = group_runs([load_run(tmp_path / "old"), load_run(tmp_path / "new")])
    assert [(g.label, len(g.runs)) for g in groups] == [("fedavg", 2)]
