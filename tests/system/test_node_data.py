"""A node's own data (node config data-dir): PFLlib client files or a dataset folder, and a
server that builds the model without holding any data."""

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from flayer.apps.server_app import check_deployed, model_spec
from flayer.config.compose import compose_dict
from flayer.config.schema import Config, to_config
from flayer.data.node import load_node_data, static_spec
from flayer.data.source import DataSpec, scale_images
from flayer.data.sources.agnews import PAD, UNK, tokenize, write_vocab
from flayer.data.sources.fmnist import FILES, read_idx
from flayer.util.errors import ConfigError, DataError
from tests import hubdata
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
    check_deployed(to_config(compose_dict(["num_clients=2", missing])))  # passes
    with pytest.raises(ConfigError, match="num_rounds"):
        check_deployed(to_config(compose_dict(["num_rounds=-1", missing])))
    with pytest.raises(ConfigError, match="backend.min_nodes"):
        check_deployed(to_config(compose_dict(["backend=deploy", "num_clients=2",
                                               "backend.min_nodes=3", missing])))


# -- every dataset whose spec is fixed, from a node folder in its own local format ------------

N = 8  # samples per split of the generated hub sets
MAX_LEN = 12  # AG News tokens per text
PRESETS = {"fmnist": "fmnist_cnn", "cifar10": "cifar10_cnn", "cifar100": "cifar100_cnn",
           "tiny_imagenet": "tiny_imagenet_cnn", "agnews": "agnews_fasttext"}
# AG News vocabulary: the generator's words, less one (so that <unk> occurs), and its punctuation
WORDS = [w.lower() for words in hubdata.TOPIC_WORDS for w in words] + [
    w.lower() for w in hubdata.COMMON_WORDS]
VOCAB = [PAD, UNK, ",", "."] + sorted(set(WORDS) - {"reuters"})


class NodeSet:
    """A node's folder and what its samples must be as model inputs (x) and labels (y)."""

    def __init__(self, folder: Path, x: np.ndarray, y: np.ndarray, spec: DataSpec,
                 overrides: tuple[str, ...] = ()) -> None:
        self.folder, self.x, self.y, self.spec, self.overrides = folder, x, y, spec, overrides


def _images(x: np.ndarray) -> np.ndarray:
    return scale_images(torch.from_numpy(x)).numpy()


def _fmnist(tmp: Path) -> NodeSet:
    folder = write_fake_fmnist(tmp / "fmnist", n_train=12, n_test=4)
    x = np.concatenate([read_idx(folder / (FILES[k] + ".gz")) for k in ("train_x", "test_x")])
    y = np.concatenate([read_idx(folder / (FILES[k] + ".gz")) for k in ("train_y", "test_y")])
    return NodeSet(folder, _images(x[:, None]), y.astype(np.int64), FMNIST_SPEC)


def _hub_images(name: str, fmt: str, image_col: str, label_col: str, classes: int,
                side: int) -> Callable[[Path], NodeSet]:
    def make(tmp: Path) -> NodeSet:
        data = getattr(hubdata, f"{name}_dict")(n_per_split=N)
        folder = hubdata.write(data, tmp / name, fmt, hubdata.PARQUET_FOLDER[name])
        x, y = hubdata.expected_pool(data, image_col, label_col)
        return NodeSet(folder, _images(x), y, DataSpec((3, side, side), classes))
    return make


def _agnews(tmp: Path) -> NodeSet:
    folder = hubdata.write_agnews(tmp / "agnews", n_per_split=N, fmt="parquet")
    vocab = tmp / "vocab.txt"
    write_vocab(vocab, VOCAB)
    index = {t: i for i, t in enumerate(VOCAB)}
    data = hubdata.agnews_dict(n_per_split=N)
    x, y = [], []
    for split in ("train", "test"):
        for row in data[split]:
            ids = [index.get(t, 1) for t in tokenize(row["text"])[:MAX_LEN]]
            x.append(ids + [0] * (MAX_LEN - len(ids)))
            y.append(row["label"])
    assert 1 in {i for row in x for i in row}  # some tokens are outside the vocabulary
    return NodeSet(folder, np.array(x, dtype=np.int64), np.array(y, dtype=np.int64),
                   DataSpec((MAX_LEN,), 4, len(VOCAB)),
                   (f"dataset.vocab={vocab}", f"dataset.max_len={MAX_LEN}"))


NODE_SETS: dict[str, Callable[[Path], NodeSet]] = {
    "fmnist": _fmnist,  # gzipped IDX files
    "cifar10": _hub_images("cifar10", "save_to_disk", "img", "label", 10, 32),
    "cifar100": _hub_images("cifar100", "parquet", "img", "fine_label", 100, 32),
    "tiny_imagenet": _hub_images("tiny_imagenet", "imagefolder", "image", "label", 200, 64),
    "agnews": _agnews,  # parquet, with a vocabulary file
}


def node_run_config(name: str, tmp_path: Path, cache_dir: Path, *overrides: str) -> Config:
    """The run's settings as a server without data has them (dataset.path leads nowhere)."""
    return make_config(f"+experiment={PRESETS[name]}", f"dataset.path={tmp_path / 'not-here'}",
                       f"cache_dir={cache_dir}", "num_clients=2", "num_rounds=1",
                       "batch_size=4", "progress=false", *overrides)


def rows(x: np.ndarray, y: np.ndarray) -> list[tuple[int, bytes]]:
    """Samples as a sorted list, to compare sets of samples whatever their order."""
    return sorted(zip(y.tolist(), [r.tobytes() for r in x], strict=True))


@pytest.mark.parametrize("name", list(NODE_SETS))
def test_a_folder_in_the_datasets_format_is_one_clients_data(name, tmp_path, cache_dir):
    node = NODE_SETS[name](tmp_path)
    cfg = node_run_config(name, tmp_path, cache_dir, *node.overrides)
    assert static_spec(cfg) == node.spec  # known without any data
    assert model_spec(cfg) == node.spec
    data = load_node_data(cfg, str(node.folder), partition_id=1)
    assert data.source.spec == node.spec and data.num_classes == node.spec.num_classes
    n = len(node.y)
    assert len(data.y_test) == math.ceil(0.25 * n) and data.num_train == n - len(data.y_test)
    x = torch.cat([data.to_input(data.x_train), data.to_input(data.x_test)]).numpy()
    y = torch.cat([data.y_train, data.y_test]).numpy()
    assert x.shape[1:] == node.spec.input_shape and y.dtype == np.int64
    assert rows(x, y) == rows(node.x, node.y)  # every sample once, with its label


@pytest.mark.parametrize("name", list(NODE_SETS))
def test_nodes_train_on_their_own_folders(name, tmp_path, cache_dir, single_thread):
    node = NODE_SETS[name](tmp_path)
    cfg = node_run_config(name, tmp_path, cache_dir, *node.overrides)
    grid = LocalGrid(cfg, node_config={"data-dir": str(node.folder)})
    _, records, _ = run_local(cfg, grid=grid)
    assert [r.failures for r in records] == [0, 0] and records[1].trained == 2
    final = records[-1].clients
    assert [c.num_test for c in final] == [math.ceil(0.25 * len(node.y))] * 2
    assert all(np.isfinite(c.accuracy) for c in final)
    assert not (tmp_path / "not-here").exists()


def test_a_spec_learnt_from_the_data_refuses_node_data(tmp_path, cache_dir):
    folder = hubdata.write_agnews(tmp_path / "agnews", n_per_split=N, fmt="parquet")
    cfg = node_run_config("agnews", tmp_path, cache_dir)  # no dataset.vocab
    assert static_spec(cfg) is None
    with pytest.raises(DataError, match="dataset.vocab"):
        load_node_data(cfg, str(folder), 0)
    assert static_spec(make_config("dataset=pfllib")) is None


def test_pfllib_token_files_are_refused_for_a_vocabulary(tmp_path, cache_dir):
    node = _agnews(tmp_path)
    cfg = node_run_config("agnews", tmp_path, cache_dir, *node.overrides)
    folder = tmp_path / "pfllib"
    folder.mkdir()
    for split in ("train", "test"):
        with open(folder / f"{split}.npz", "wb") as f:
            np.savez_compressed(f, data={"x": node.x[:4], "y": node.y[:4]})
    with pytest.raises(DataError, match="token ids"):
        load_node_data(cfg, str(folder), 0)


def test_a_missing_vocabulary_file_is_named(tmp_path, cache_dir):
    cfg = node_run_config("agnews", tmp_path, cache_dir, f"dataset.vocab={tmp_path / 'no.txt'}")
    with pytest.raises(DataError, match="no.txt"):
        static_spec(cfg)
