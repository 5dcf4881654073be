"""Damaged files meet a run as one clear error naming the file, never as a reader's traceback:
every dataset format, PFLlib folders, node data, vocabulary files and client state files,
each cut short, emptied, overwritten with another format or of the wrong shape."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from flayer.config.schema import DatasetConfig
from flayer.config.validation import validate
from flayer.data.fetch_fmnist import write_idx
from flayer.data.node import load_node_data
from flayer.data.sources import DATASETS
from flayer.data.sources.agnews import read_vocab
from flayer.data.sources.fmnist import FILES
from flayer.state.personal import Personal, load_state, save_state
from flayer.state.store import ClientStore
from flayer.util.errors import DamagedFile, DataError
from tests import hubdata
from tests.helpers import make_config, write_fake_fmnist
from tests.pfllibdata import image_clients, write_pfllib


def cut(file: Path) -> None:
    """Cut short, as a copy that stopped half way."""
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def empty(file: Path) -> None:
    file.write_bytes(b"")


def garbage(file: Path) -> None:
    """Another format altogether (random bytes, the size of the original)."""
    file.write_bytes(np.random.default_rng(0).bytes(max(64, file.stat().st_size)))


def text(file: Path) -> None:
    file.write_text("this is not the file you are looking for\n")


DAMAGES = {"cut": cut, "empty": empty, "garbage": garbage, "text": text}


def fails_naming(file: Path, action) -> str:
    with pytest.raises(DataError) as caught:
        action()
    message = str(caught.value)
    assert file.name in message, message
    assert "\n" not in message.strip(), message
    return message


def read_source(name: str, path: Path) -> None:
    """Everything a run asks of a source before its first round."""
    source = DATASETS.get(name)(DatasetConfig(name=name, path=str(path)))
    source.check()
    source.num_samples()
    source.fingerprint()
    pool = source.load()
    if not source.partitioned:
        source.fixed_splits()
    source.fit(pool.x, np.arange(len(pool.y)), path.parent / "fitted")


# ---- Fashion-MNIST's IDX files -------------------------------------------------------------
@pytest.fixture
def fmnist_check(tmp_path):
    data = write_fake_fmnist(tmp_path / "fmnist", n_train=60, n_test=20)

    def check() -> None:
        validate(make_config(f"dataset.path={data}", f"cache_dir={tmp_path / 'cache'}",
                             "num_clients=2", "partition=iid"))
    return data, check


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("key", ["train_x", "test_y"])
def test_a_damaged_idx_file_is_named(fmnist_check, damage, key):
    data, check = fmnist_check
    file = data / (FILES[key] + ".gz")
    DAMAGES[damage](file)
    message = fails_naming(file, check)
    assert "dataset-fashion-mnist" in message or "dataset.path" in message  # what to do


@pytest.mark.parametrize(("key", "array", "said"), [
    ("train_x", np.zeros((60, 27, 28), np.uint8), "shape"),  # not 28 x 28 images
    ("train_x", np.zeros((60, 28 * 28), np.uint8), "shape"),  # flat rows
    ("test_y", np.zeros((19,), np.uint8), "19 labels"),  # fewer labels than images
    ("train_y", np.full((60,), 12, np.uint8), "label 12"),  # a label Fashion-MNIST lacks
])
def test_an_idx_file_of_the_wrong_shape_or_labels_is_named(fmnist_check, key, array, said):
    data, check = fmnist_check
    file = data / (FILES[key] + ".gz")
    write_idx(file, array)
    assert said in fails_naming(file, check)


def test_an_idx_file_whose_header_promises_more_than_it_holds(fmnist_check):
    data, check = fmnist_check
    file = data / (FILES["test_x"] + ".gz")
    with gzip.open(file, "rb") as f:
        raw = f.read()
    with gzip.open(file, "wb") as f:
        f.write(raw[:-100])  # a whole gzip stream of a truncated IDX
    assert "header says" in fails_naming(file, check)


# ---- PFLlib folders, also as a node's own data ----------------------------------------------
@pytest.fixture
def pfllib(tmp_path):
    return write_pfllib(tmp_path / "pfl", image_clients([(8, 4), (6, 3)]), num_classes=3)


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_pfllib_client_file_is_named(pfllib, damage):
    file = pfllib / "test" / "1.npz"
    DAMAGES[damage](file)
    assert "PFLlib" in fails_naming(file, lambda: read_source("pfllib", pfllib))


def test_a_pfllib_file_without_its_data_entry_or_with_unequal_parts(pfllib):
    file = pfllib / "train" / "0.npz"
    np.savez(file, other=np.zeros(3))
    fails_naming(file, lambda: read_source("pfllib", pfllib))
    with open(file, "wb") as f:
        np.savez_compressed(f, data={"x": np.zeros((5, 1, 4, 4), np.float32),
                                     "y": np.zeros(4, np.int64)})
    assert "5 inputs but 4 labels" in fails_naming(file, lambda: read_source("pfllib", pfllib))


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_pfllib_config_is_named(pfllib, damage):
    file = pfllib / "config.json"
    DAMAGES[damage](file)
    fails_naming(file, lambda: read_source("pfllib", pfllib))


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_node_data_is_named(tmp_path, damage):
    folder = tmp_path / "node"
    folder.mkdir()
    x = np.zeros((10, 1, 28, 28), np.float32)
    y = np.arange(10) % 10
    for part in ("train", "test"):
        with open(folder / f"{part}.npz", "wb") as f:
            np.savez_compressed(f, data={"x": x, "y": y})
    DAMAGES[damage](folder / "train.npz")
    cfg = make_config("num_clients=2")
    fails_naming(folder / "train.npz", lambda: load_node_data(cfg, str(folder), 0))


def test_a_damaged_idx_file_as_node_data_is_named(tmp_path):
    folder = write_fake_fmnist(tmp_path / "node", n_train=30, n_test=10)
    cut(folder / (FILES["train_x"] + ".gz"))
    cfg = make_config("num_clients=2")
    fails_naming(folder / (FILES["train_x"] + ".gz"),
                 lambda: load_node_data(cfg, str(folder), 1))


# ---- hub formats: parquet, save_to_disk, image folders --------------------------------------
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_parquet_file_is_named(tmp_path, damage):
    folder = hubdata.write_cifar10(tmp_path / "c10", n_per_split=6, fmt="parquet")
    file = sorted(folder.rglob("test-*.parquet"))[0]
    DAMAGES[damage](file)
    fails_naming(file, lambda: read_source("cifar10", folder))


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_save_to_disk_folder_is_named(tmp_path, damage):
    folder = hubdata.write_cifar10(tmp_path / "c10", n_per_split=6)
    file = sorted((folder / "train").glob("*.arrow"))[0]
    DAMAGES[damage](file)
    fails_naming(folder, lambda: read_source("cifar10", folder))


def test_a_damaged_save_to_disk_state_file_is_named(tmp_path):
    folder = hubdata.write_cifar10(tmp_path / "c10", n_per_split=6)
    garbage(folder / "train" / "state.json")
    fails_naming(folder, lambda: read_source("cifar10", folder))


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_image_is_named(tmp_path, damage):
    folder = hubdata.write_cifar10(tmp_path / "c10", n_per_split=4, fmt="imagefolder")
    file = sorted(folder.rglob("*.png"))[3]
    DAMAGES[damage](file)
    fails_naming(file, lambda: read_source("cifar10", folder))


# ---- vocabulary and client state files -------------------------------------------------------
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_vocabulary_file_is_named(tmp_path, damage):
    file = tmp_path / "vocab.txt"
    file.write_text("<pad>\n<unk>\nthe\nnews\n")
    DAMAGES[damage](file)
    fails_naming(file, lambda: read_vocab(file))


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_client_state_file_is_named(tmp_path, damage):
    store = ClientStore(tmp_path / "state")
    store.save(3, Personal(arrays={"w": np.ones(40, np.float32)}, meta={"a": 0.5}, version=2))
    DAMAGES[damage](store.file(3))
    with pytest.raises(DamagedFile) as caught:
        store.load(3)
    assert store.file(3).name in str(caught.value)


def test_a_state_file_without_its_metadata_is_damaged(tmp_path):
    file = tmp_path / "client.npz"
    np.savez(file, w=np.ones(3))
    with pytest.raises(DamagedFile):
        load_state(file)
    save_state(file, Personal(arrays={"w": np.ones(3)}, meta={}, version=None))
    meta = json.loads(str(np.load(file)["__meta__"]))
    assert meta == {"meta": {}, "version": None}  # a whole file still reads
    assert load_state(file).version is None


# ---- TLS files given to the deployment --------------------------------------------------------
@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    from flayer.deploy.security import make_tls

    folder = tmp_path_factory.mktemp("certs")
    return make_tls(folder / "a"), make_tls(folder / "b")


@pytest.mark.parametrize("which", ["ca_cert", "server_cert", "server_key"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_tls_files_are_named(certificates, tmp_path, which, damage):
    import dataclasses
    import shutil

    from flayer.deploy.security import check_tls

    tls, _ = certificates
    files = {k: tmp_path / Path(v).name for k, v in dataclasses.asdict(tls).items()}
    for k, v in dataclasses.asdict(tls).items():
        shutil.copy(v, files[k])
    given = type(tls)(**files)
    check_tls(given)  # whole: accepted
    DAMAGES[damage](files[which])
    fails_naming(files[which], lambda: check_tls(given))


def test_tls_files_that_do_not_belong_together_are_named(certificates):
    from flayer.deploy.security import TlsFiles, check_tls

    a, b = certificates
    fails_naming(a.server_key, lambda: check_tls(TlsFiles(a.ca_cert, a.server_cert,
                                                          b.server_key)))
    fails_naming(a.server_cert, lambda: check_tls(TlsFiles(b.ca_cert, a.server_cert,
                                                           a.server_key)))


# ---- the cache: made again from the data -------------------------------------------------
@pytest.mark.parametrize("damage", [cut, empty])
def test_a_damaged_cache_is_made_again_from_the_data(tmp_path, damage, caplog):
    from flayer.data.federated import client_splits, pool_files, splits_file

    data = write_fake_fmnist(tmp_path / "fmnist", n_train=60, n_test=20)
    cfg = make_config(f"dataset.path={data}", f"cache_dir={tmp_path / 'cache'}",
                      "num_clients=2", "partition=iid")
    splits = client_splits(cfg)
    x_file, _ = pool_files(cfg)
    pool = np.load(x_file).copy()
    from flayer.data.cache import forget

    forget()
    damage(x_file)
    damage(splits_file(cfg))
    with caplog.at_level(logging.WARNING, logger="flayer"):
        again = client_splits(cfg)
        np.testing.assert_array_equal(np.load(pool_files(cfg)[0]), pool)
    assert "damaged" in caplog.text
    for a, b in zip(splits, again, strict=True):
        np.testing.assert_array_equal(a.train, b.train)
        np.testing.assert_array_equal(a.test, b.test)


# ---- run folders read by the report --------------------------------------------------------
@pytest.mark.parametrize("name", ["summary.json", "metrics.csv", "config.yaml"])
def test_the_report_names_a_damaged_run_file(tmp_path, capsys, name):
    from flayer.results.report import main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps({"method": "fedavg", "complete": True}))
    (run_dir / "metrics.csv").write_text("round,accuracy\n0,0.5\n")
    (run_dir / "config.yaml").write_text("seed: 0\n")
    garbage(run_dir / name)
    assert main([str(run_dir)]) == 2
    error = capsys.readouterr().err.strip()
    assert name in error and len(error.splitlines()) == 1, error


def test_stray_files_in_a_node_state_folder_are_not_states(tmp_path):
    from flayer.state.store import NodeStates

    states = NodeStates(str(tmp_path), "run-1", 0)
    states.save((1, 0), Personal(arrays={"w": np.ones(2)}, meta={}, version=1), -1)
    (states.folder / "notes-v2.npz").write_text("mine")
    assert states.stamps() == [(1, 0)]
