"""A node's own data (node config data-dir): PFLlib client files or a dataset folder, and a
server that builds the model without holding any data."""

from pathlib import Path

import numpy as np
import pytest

from flayer.apps.server_app import check_deployed, model_spec
from flayer.compose import compose_dict
from flayer.data.fmnist import FILES, read_idx
from flayer.data.node import load_node_data
from flayer.errors import ConfigError, DataError
from tests.helpers import FMNIST_SPEC, make_config, write_fake_fmnist
from tests.localgrid import LocalGrid, run_local


def write_pfllib_client(folder: Path, x: np.ndarray, y: np.ndarray, n_train: int,
                        name: str = "") -> None:
    """PFLlib's client files: np.savez_compressed(f, data={'x': ..., 'y': ...}), images as
    float32 normalized to [-1, 1] (ToTensor, then Normalize(0.5, 0.5))."""
    x = ((x.astype(np.float32) / 255.0) - 0.5) / 0.5
    for split, idx in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
        file = folder / (f"{split}/{name}.npz" if name else f"{split}.npz")
        file.parent.mkdir(parents=True, exist_ok=True)
        with open(file, "wb") as f:
            np.savez_compressed(f, data={"x": x[idx], "y": y[idx]})


@pytest.fixture
def images(fake_fmnist):
    x = read_idx(fake_fmnist / (FILES["train_x"] + ".gz"))[:50, None]
    y = read_idx(fake_fmnist / (FILES["train_y"] + ".gz"))[:50].astype(np.int64)
    return x, y


@pytest.mark.parametrize("layout", ["flat", "pfllib"])
def test_pfllib_client_files_are_read_back_exactly(tmp_path, cache_dir, images, layout):
    x, y = images
    folder = tmp_path / "node"
    write_pfllib_client(folder, x, y, n_train=40, name="2" if layout == "pfllib" else "")
    cfg = make_config("num_clients=3", f"cache_dir={cache_dir}", "dataset.path=/nonexistent")
    data = load_node_data(cfg, str(folder), partition_id=2)
    assert data.x_train.dtype.is_floating_point is False
    assert np.array_equal(data.x_train.numpy(), x[:40]) and np.array_equal(data.y_train, y[:40])
    assert np.array_equal(data.x_test.numpy(), x[40:]) and np.array_equal(data.y_test, y[40:])
    assert data.num_classes == 10 and len(data.y_val) == 0


def test_a_dataset_folder_is_the_nodes_data_split_by_the_node(tmp_path, cache_dir):
    folder = write_fake_fmnist(tmp_path / "mine", n_train=90, n_test=30)
    cfg = make_config("num_clients=3", f"cache_dir={cache_dir}", "dataset.path=/nonexistent")
    a = load_node_data(cfg, str(folder), partition_id=0)
    b = load_node_data(cfg, str(folder), partition_id=1)
    assert len(a.y_train) == 90 and len(a.y_test) == 30  # 75% / 25% of its 120 samples
    assert not np.array_equal(a.y_train, b.y_train)  # seeded by seed and partition id
    again = make_config("num_clients=3", f"cache_dir={cache_dir}", "dataset.path=/nonexistent",
                        "seed=0")
    assert np.array_equal(load_node_data(again, str(folder), 0, 0.1).y_test, a.y_test)


def test_bad_node_data_is_named(tmp_path, cache_dir, images):
    cfg = make_config("num_clients=3", f"cache_dir={cache_dir}")
    with pytest.raises(DataError, match="does not exist"):
        load_node_data(cfg, str(tmp_path / "missing"), 0)
    folder = tmp_path / "bad"
    x, y = images
    write_pfllib_client(folder, x, y, n_train=40)
    with open(folder / "train.npz", "wb") as f:
        np.savez_compressed(f, data={"x": np.full((4, 1, 28, 28), 3.0, np.float32),
                                     "y": np.zeros(4, np.int64)})
    with pytest.raises(DataError, match=r"\[-1, 1\]"):
        load_node_data(cfg, str(folder), 0)


def test_nodes_with_own_data_train_while_the_server_holds_none(tmp_path, cache_dir, images):
    x, y = images
    folder = tmp_path / "node"
    write_pfllib_client(folder, x, y, n_train=40)
    cfg = make_config("strategy=flayer", "num_clients=2", "num_rounds=1", "batch_size=8",
                      f"cache_dir={cache_dir}", f"dataset.path={tmp_path / 'not-here'}",
                      "progress=false")
    assert model_spec(cfg) == FMNIST_SPEC  # known without any data
    _, records, _ = run_local(cfg, grid=LocalGrid(cfg, node_config={"data-dir": str(folder)}))
    assert [r.failures for r in records] == [0, 0]
    assert [c.num_test for c in records[-1].clients] == [10, 10]


def test_the_deployed_server_checks_settings_without_the_data(tmp_path, cache_dir):
    missing = f"dataset.path={tmp_path / 'not-here'}"
    cfg = check_deployed(compose_dict(["num_clients=2", missing]), tmp_path / "run")
    assert cfg.num_clients == 2 and cfg.backend.name == "ray"
    with pytest.raises(ConfigError, match="num_rounds"):
        check_deployed(compose_dict(["num_rounds=-1", missing]), tmp_path / "run")
    with pytest.raises(ConfigError, match="backend.min_nodes"):
        check_deployed(compose_dict(["backend=deploy", "num_clients=2", "backend.min_nodes=3",
                                     missing]), tmp_path / "run")
