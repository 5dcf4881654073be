"""Hub image sets (CIFAR-10, CIFAR-100, Tiny-ImageNet) from the hub and from local copies."""

import glob
import json
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from flayer.config.schema import DatasetConfig
from flayer.data import cache
from flayer.data.federated import load_client
from flayer.data.hub import online
from flayer.data.sources.images import CIFAR10, CIFAR100, TinyImageNet
from flayer.util.errors import DataError
from tests import hubdata
from tests.helpers import make_config

SETS = {  # source, generator, its image and label columns
    "cifar10": (CIFAR10, hubdata.cifar10_dict, "img", "label"),
    "cifar100": (CIFAR100, hubdata.cifar100_dict, "img", "fine_label"),
    "tiny_imagenet": (TinyImageNet, hubdata.tiny_imagenet_dict, "image", "label"),
}


@pytest.fixture(autouse=True)
def fresh_reads():
    """Tests replace `datasets.load_dataset` and rewrite folders: nothing read is kept."""
    cache.forget()
    yield
    cache.forget()


@pytest.fixture
def hub_returns(monkeypatch):
    """Make `datasets.load_dataset` return the given data (the hub is never asked)."""
    calls = []

    def patch(data):
        def load_dataset(hub_id, *args, **kwargs):
            calls.append(hub_id)
            return data

        monkeypatch.setattr(online, "hub_online", lambda: True)
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(datasets, "load_dataset", load_dataset)
        return calls

    return patch


def rows(x: np.ndarray, y: np.ndarray) -> list:
    """Samples as a sorted list, to compare pools whose order may differ."""
    return sorted(zip(y.tolist(), [r.tobytes() for r in x], strict=True))


@pytest.mark.parametrize("fmt", hubdata.FORMATS)
@pytest.mark.parametrize("name", list(SETS))
def test_every_local_format_gives_the_pool(tmp_path, name, fmt):
    cls, make, image_col, label_col = SETS[name]
    data = make(n_per_split=6)
    folder = hubdata.write(data, tmp_path / name, fmt, hubdata.PARQUET_FOLDER[name])
    source = cls(DatasetConfig(name=name, path=str(folder)))
    source.check()
    assert source.num_samples() == 12
    pool = source.load()
    h, w = cls.size
    assert pool.x.shape == (12, 3, h, w) and pool.x.dtype == np.uint8
    assert pool.y.dtype == np.int64
    x, y = hubdata.expected_pool(data, image_col, label_col)
    if fmt == "imagefolder":  # one folder per class: same samples, other order
        assert rows(pool.x, pool.y) == rows(x, y)
    else:  # train first, row by row
        np.testing.assert_array_equal(pool.x, x)
        np.testing.assert_array_equal(pool.y, y)
    assert source.spec.input_shape == (3, h, w)
    assert source.spec.num_classes == {"cifar10": 10, "cifar100": 100, "tiny_imagenet": 200}[name]


def test_greyscale_tiny_imagenet_images_become_rgb(tmp_path):
    data = hubdata.tiny_imagenet_dict(n_per_split=4, grey_every=2)
    assert data["train"][0]["image"].mode == "L"
    folder = hubdata.write(data, tmp_path / "tiny", "parquet")
    pool = TinyImageNet(DatasetConfig(name="tiny_imagenet", path=str(folder))).load()
    grey = pool.x[0]
    assert grey.shape == (3, 64, 64)
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[1], grey[2])
    expected = np.asarray(data["train"][0]["image"])
    np.testing.assert_array_equal(grey[0], expected)
    assert not np.array_equal(pool.x[1][0], pool.x[1][2])  # a colour image stays in colour


@pytest.mark.parametrize("fmt", ["save_to_disk", "parquet"])
def test_splits_merge_train_first_then_by_name(tmp_path, fmt):
    parts = {name: hubdata.cifar10_dict(n_per_split=2, seed=i)["train"]
             for i, name in enumerate(["test", "train", "b_extra"])}
    for label, name in enumerate(["train", "b_extra", "test"]):
        parts[name] = parts[name].map(lambda r, lab=label: {"label": lab})
    folder = hubdata.write(datasets.DatasetDict(parts), tmp_path / "c", fmt)
    pool = CIFAR10(DatasetConfig(name="cifar10", path=str(folder))).load()
    assert pool.y.tolist() == [0, 0, 1, 1, 2, 2]


def test_a_single_dataset_folder_or_parquet_file_is_one_split(tmp_path):
    data = hubdata.cifar10_dict(n_per_split=3)
    data["train"].save_to_disk(str(tmp_path / "one"))
    data["test"].to_parquet(str(tmp_path / "test.parquet"))
    for path, split in ((tmp_path / "one", "train"), (tmp_path / "test.parquet", "test")):
        source = CIFAR10(DatasetConfig(name="cifar10", path=str(path)))
        assert source.num_samples() == 3
        np.testing.assert_array_equal(source.load().y, data[split]["label"])


def test_hub_path_uses_load_dataset_once_per_process(hub_returns):
    data = hubdata.cifar100_dict(n_per_split=4)
    calls = hub_returns(data)
    source = CIFAR100(DatasetConfig(name="cifar100"))
    source.check()
    assert source.num_samples() == 8
    again = CIFAR100(DatasetConfig(name="cifar100"))
    assert again.fingerprint() == source.fingerprint()
    pool = again.load()
    x, y = hubdata.expected_pool(data, "img", "fine_label")
    np.testing.assert_array_equal(pool.x, x)
    np.testing.assert_array_equal(pool.y, y)
    assert calls == ["uoft-cs/cifar100"]


def test_offline_without_a_cached_copy_names_the_hub_id_and_the_local_formats(
        monkeypatch, tmp_path):
    def no_hub(*args, **kwargs):
        raise AssertionError("the hub must not be asked")

    monkeypatch.setattr(online, "hub_online", lambda: False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    source = TinyImageNet(DatasetConfig(name="tiny_imagenet"))
    with pytest.raises(DataError) as err:
        source.num_samples()
    message = str(err.value)
    for part in ("zh-plus/tiny-imagenet", "dataset.path", "save_to_disk", "parquet",
                 "image folder"):
        assert part in message


def test_a_failing_hub_is_a_data_error(monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'uoft-cs/cifar10' on the Hub")

    monkeypatch.setattr(online, "hub_online", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataError, match="uoft-cs/cifar10.*Couldn't reach.*save_to_disk"):
        CIFAR10(DatasetConfig(name="cifar10")).load()


def test_check_fails_fast_when_offline_is_set_and_nothing_is_cached(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="uoft-cs/cifar10.*HF_HUB_OFFLINE"):
        CIFAR10(DatasetConfig(name="cifar10")).check()


def test_offline_reads_the_local_hugging_face_cache(monkeypatch, tmp_path):
    """Offline, a copy that `datasets` cached earlier is read without asking the hub (the
    cache is laid out here as `datasets` lays out a prepared hub dataset)."""
    cache = tmp_path / "hf"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    folder = hubdata.write_cifar10(tmp_path / "src", n_per_split=3, fmt="parquet")
    datasets.load_dataset("parquet", data_dir=str(folder / "plain_text"), cache_dir=str(cache))
    built = next(Path(p) for p in glob.glob(str(cache / "parquet" / "*" / "*" / "*"))
                 if os.path.isdir(p))
    target = cache / "uoft-cs___cifar10" / "plain_text" / "0.0.0" / built.name
    target.mkdir(parents=True)
    for arrow in built.glob("*.arrow"):
        shutil.copy(arrow, target / arrow.name.replace("parquet-", "cifar10-"))
    info = json.loads((built / "dataset_info.json").read_text())
    info.update(config_name="plain_text", dataset_name="cifar10")
    (target / "dataset_info.json").write_text(json.dumps(info))

    monkeypatch.setattr(online, "hub_online", lambda: False)
    source = CIFAR10(DatasetConfig(name="cifar10"))
    source.check()
    assert source.num_samples() == 6
    assert source.load().y.shape == (6,)
    assert datasets.config.HF_HUB_OFFLINE is False  # offline only while reading


def test_missing_or_unknown_paths_name_the_path_and_the_formats(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    (tmp_path / "file.csv").write_text("x")
    for path in (tmp_path / "absent", tmp_path / "junk", tmp_path / "file.csv"):
        with pytest.raises(DataError) as err:
            CIFAR10(DatasetConfig(name="cifar10", path=str(path))).check()
        message = str(err.value)
        assert str(path) in message and "save_to_disk" in message and "parquet" in message
        assert "image folder" in message


def test_wrong_image_size_names_the_file_and_its_size(tmp_path):
    folder = hubdata.write_cifar10(tmp_path / "c", n_per_split=2, fmt="imagefolder")
    PILImage.new("RGB", (30, 28)).save(folder / "airplane" / "odd.png")
    with pytest.raises(DataError, match=r"odd\.png.*30x28.*32x32"):
        CIFAR10(DatasetConfig(name="cifar10", path=str(folder))).load()


def test_missing_column_is_named(tmp_path):
    folder = hubdata.write_cifar10(tmp_path / "c", n_per_split=2, fmt="parquet")
    with pytest.raises(DataError, match="fine_label"):
        CIFAR100(DatasetConfig(name="cifar100", path=str(folder))).load()


def test_numbered_class_folders_keep_their_numbers_and_must_fit(tmp_path):
    for label in (3, 7):
        (tmp_path / "c" / str(label)).mkdir(parents=True)
        PILImage.new("RGB", (32, 32), (label, 0, 0)).save(tmp_path / "c" / str(label) / "a.png")
    pool = CIFAR10(DatasetConfig(name="cifar10", path=str(tmp_path / "c"))).load()
    assert pool.y.tolist() == [3, 7] and pool.x[:, 0, 0, 0].tolist() == [3, 7]
    (tmp_path / "c" / "12").mkdir()
    PILImage.new("RGB", (32, 32)).save(tmp_path / "c" / "12" / "a.png")
    cache.forget()
    with pytest.raises(DataError, match="label 12"):
        CIFAR10(DatasetConfig(name="cifar10", path=str(tmp_path / "c"))).load()


@pytest.mark.parametrize("fmt", hubdata.FORMATS)
def test_size_and_fingerprint_do_not_decode_images(tmp_path, monkeypatch, fmt):
    folder = hubdata.write_cifar10(tmp_path / "c", n_per_split=3, fmt=fmt)
    other = hubdata.write_cifar10(tmp_path / "d", n_per_split=3, fmt=fmt, seed=1)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(PILImage, "open", no_decoding)
    source = CIFAR10(DatasetConfig(name="cifar10", path=str(folder)))
    source.check()
    assert source.num_samples() == 6
    fingerprint = source.fingerprint()
    assert CIFAR10(DatasetConfig(name="cifar10", path=str(folder))).fingerprint() == fingerprint
    assert CIFAR10(DatasetConfig(name="cifar10", path=str(other))).fingerprint() != fingerprint


@pytest.mark.parametrize("name, fmt", [("cifar10", "save_to_disk"),
                                       ("tiny_imagenet", "imagefolder")])
def test_clients_get_images_and_normalized_inputs(tmp_path, cache_dir, name, fmt):
    write = {"cifar10": hubdata.write_cifar10, "tiny_imagenet": hubdata.write_tiny_imagenet}
    folder = write[name](tmp_path / name, n_per_split=20, fmt=fmt)
    cfg = make_config(f"dataset={name}", f"dataset.path={folder}", f"cache_dir={cache_dir}",
                      "num_clients=2", "partition.alpha=1.0", "partition.min_partition_size=4")
    side = SETS[name][0].size[0]
    total = 0
    for k in range(2):
        data = load_client(cfg, k)
        assert data.x_train.dtype == torch.uint8 and data.x_train.shape[1:] == (3, side, side)
        assert data.y_train.dtype == torch.int64
        assert len(data.x_test) == len(data.y_test) > 0
        x = data.to_input(data.x_train[:4])
        assert x.dtype == torch.float32 and x.shape == (4, 3, side, side)
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0 and float(x.std()) > 0.1
        total += data.num_train + len(data.y_test)
    assert total == 40
    assert data.source.spec.input_shape == (3, side, side)


@pytest.mark.parametrize("make", [hubdata.cifar10_dict, hubdata.tiny_imagenet_dict])
def test_generated_images_are_learnable(make):
    """The class means of the train split classify the other split (what a model can learn)."""
    data = make(n_per_split=30)
    image_col = "img" if "img" in data["train"].column_names else "image"
    x, y = hubdata.expected_pool(data, image_col, "label")
    x = x.reshape(len(x), -1).astype(np.float64)
    train, test = np.arange(30), np.arange(30, 60)
    classes = np.unique(y[train])
    means = np.stack([x[train][y[train] == c].mean(0) for c in classes])
    guess = classes[((x[test, None, :] - means[None]) ** 2).sum(-1).argmin(1)]
    assert (guess == y[test]).mean() >= 0.9


def test_a_broken_image_file_is_named(tmp_path):
    folder = hubdata.write_cifar10(tmp_path / "c", n_per_split=2, fmt="imagefolder")
    good = next((folder / "airplane").glob("*.png"))
    (folder / "airplane" / "broken.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(DataError, match=r"broken\.png"):
        CIFAR10(DatasetConfig(name="cifar10", path=str(folder))).load()
