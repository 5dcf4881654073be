"""Every preset of conf/experiment/ composes to its reference's setup (the paper's, LEAF's for
Shakespeare) and runs one round end to end (the real ServerApp logic and ClientApp handlers) on
generated data in the hub's schema or the plays' format."""

from pathlib import Path

import numpy as np
import pytest

from flayer.algorithm.settings import reference
from flayer.config.validation import validate
from tests import hubdata
from tests.helpers import CONF, make_config, write_fake_fmnist
from tests.localgrid import run_local
from tests.playdata import small_plays

ALL_PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
TRIALS = ["smoke"]  # quick trials, not the paper's setups: tests/unit/test_fraction.py
# data that brings its own clients (LEAF's set-ups, not the FLAYER paper's): tests below
OWN_CLIENTS = ["shakespeare_lstm"]
PAPER_PRESETS = [p for p in ALL_PRESETS if p not in TRIALS + OWN_CLIENTS]
PRESETS = [p for p in ALL_PRESETS if p not in TRIALS]

# FLAYER.md, "Default setups": (dataset, model, rounds, lr, P)
PAPER = {
    "fmnist_cnn": ("fmnist", "cnn", 20, 0.005, 2),
    "cifar10_cnn": ("cifar10", "cnn", 100, 0.005, 2),
    "cifar100_cnn": ("cifar100", "cnn", 40, 0.005, 2),
    "tiny_imagenet_cnn": ("tiny_imagenet", "cnn", 25, 0.005, 2),
    "cifar10_resnet18": ("cifar10", "resnet18", 100, 0.1, 4),
    "cifar100_resnet18": ("cifar100", "resnet18", 75, 0.1, 4),
    "tiny_imagenet_resnet18": ("tiny_imagenet", "resnet18", 25, 0.1, 4),
    "agnews_fasttext": ("agnews", "fasttext", 1000, 0.1, 2),
}

WRITERS = {
    "fmnist": lambda folder: write_fake_fmnist(folder, n_train=40, n_test=20),
    "cifar10": lambda folder: hubdata.write_cifar10(folder, n_per_split=20),
    "cifar100": lambda folder: hubdata.write_cifar100(folder, n_per_split=20),
    "tiny_imagenet": lambda folder: hubdata.write_tiny_imagenet(folder, n_per_split=20),
    "agnews": lambda folder: hubdata.write_agnews(folder, n_per_split=30),
    "shakespeare": lambda folder: small_plays(folder, roles=3, lines=3, width=24),
}
SMALL = {"shakespeare": ["dataset.max_len=8"]}  # 8-character windows: a quick LSTM


def test_every_preset_is_listed():
    assert sorted([*PAPER, *TRIALS, *OWN_CLIENTS]) == ALL_PRESETS


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_preset_is_the_papers_setup(preset):
    cfg = make_config(f"+experiment={preset}")
    dataset, model, rounds, lr, p = PAPER[preset]
    assert (cfg.dataset.name, cfg.model.name, cfg.num_rounds) == (dataset, model, rounds)
    assert (cfg.learning_rate, reference(cfg.model.name).P) == (lr, p)
    assert (cfg.num_clients, cfg.partition.name, cfg.partition.alpha) == (20, "dirichlet", 0.1)
    assert (cfg.batch_size, cfg.local_epochs, cfg.partition.train_fraction) == (10, 1, 0.75)


def test_shakespeare_preset_is_leafs_setup():
    cfg = make_config("+experiment=shakespeare_lstm")
    assert (cfg.dataset.name, cfg.model.name, cfg.dataset.max_len) == ("shakespeare",
                                                                        "char_lstm", 80)
    assert (cfg.learning_rate, cfg.batch_size, cfg.local_epochs) == (0.8, 10, 1)
    # LEAF's 10 clients per round, from 20 roles; fewer rounds than LEAF's 80
    assert (cfg.num_clients, int(cfg.num_clients * cfg.join_ratio)) == (20, 10)
    assert cfg.num_rounds == 20 and reference(cfg.model.name).P == 2


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_one_round_on_local_data(preset, tmp_path, cache_dir, single_thread):
    dataset = make_config(f"+experiment={preset}").dataset.name
    folder = WRITERS[dataset](tmp_path / dataset)
    cfg = make_config(f"+experiment={preset}", f"dataset.path={folder}", f"cache_dir={cache_dir}",
                      "num_rounds=1", "num_clients=2", "join_ratio=1.0", "partition.alpha=1.0",
                      "batch_size=4", "progress=false", *SMALL.get(dataset, []))
    validate(cfg)
    strategy, records, _ = run_local(cfg)
    assert [r.round for r in records] == [0, 1]
    assert all(r.failures == 0 for r in records)
    assert records[1].trained == 2 and records[1].upload_bytes > 0
    assert all(len(r.clients) == 2 for r in records)
    final = records[-1].clients
    assert sum(c.num_test for c in final) > 0
    assert all(np.isfinite(c.accuracy) for c in final)
    assert strategy.version == 1


def test_preset_names_the_missing_data(tmp_path, cache_dir):
    from flayer.util.errors import ConfigError

    cfg = make_config("+experiment=cifar10_cnn", f"dataset.path={tmp_path / 'nowhere'}",
                      f"cache_dir={cache_dir}")
    with pytest.raises(ConfigError, match="dataset.path"):
        validate(cfg)
    assert not Path(cache_dir).exists() or not any(Path(cache_dir).rglob("*.npy"))
