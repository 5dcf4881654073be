"""FEMNIST from the hub's schema (flwrlabs/femnist): greyscale 1x28x28 images, 62 classes, in
every local form the hub sets accept, and the paper's CNN on it."""

import datasets
import numpy as np
import pytest
import torch

from flayer.config.schema import DatasetConfig
from flayer.data import cache
from flayer.data.hub import online
from flayer.data.source import DataSpec
from flayer.data.sources import DATASETS
from flayer.data.sources.images import FEMNIST
from flayer.nn.models import build_model
from tests import hubdata
from tests.helpers import make_config

SIZES = (7, 4, 9)


@pytest.fixture(autouse=True)
def fresh_reads():
    cache.forget()
    yield
    cache.forget()


def test_the_spec_is_fixed_greyscale_and_62_classes():
    assert DATASETS.get("femnist") is FEMNIST
    assert FEMNIST.static_spec(DatasetConfig(name="femnist")) == DataSpec((1, 28, 28), 62)
    assert FEMNIST.client_columns[0] == "writer_id"
    assert hubdata.FEMNIST_NAMES[10] == "A" and hubdata.FEMNIST_NAMES[36] == "a"


@pytest.mark.parametrize("fmt", ["save_to_disk", "parquet", "imagefolder"])
def test_every_local_form_gives_the_pool(tmp_path, fmt):
    data = hubdata.femnist_dict(sizes=SIZES, num_used=5)
    folder = hubdata.write(data, tmp_path / "femnist", fmt, hubdata.PARQUET_FOLDER["femnist"])
    source = FEMNIST(DatasetConfig(name="femnist", path=str(folder)))
    source.check()
    assert source.num_samples() == sum(SIZES)
    pool = source.load()
    assert pool.x.shape == (sum(SIZES), 1, 28, 28) and pool.x.dtype == np.uint8
    x, y = hubdata.expected_pool(data, "image", "character", mode="L")
    if fmt == "imagefolder":  # one folder per class (named 0, 1, ..., A, ...): other order
        by_label = np.argsort(y, kind="stable")
        x, y = x[by_label], y[by_label]
    np.testing.assert_array_equal(pool.x, x)
    np.testing.assert_array_equal(pool.y, y)
    if fmt != "imagefolder":
        writers = source.column("writer_id")
        assert writers.tolist() == [hubdata.writer_id(k) for k, n in enumerate(SIZES)
                                    for _ in range(n)]
        assert source.column("hsf_id").tolist() == np.repeat([0, 1, 2], SIZES).tolist()


def test_labels_beyond_the_first_classes_are_kept(tmp_path):
    data = hubdata.femnist_dict(sizes=(62, 62), num_used=62)
    folder = hubdata.write(data, tmp_path / "femnist", "save_to_disk")
    pool = FEMNIST(DatasetConfig(name="femnist", path=str(folder))).load()
    assert sorted(set(pool.y.tolist())) == list(range(62))


def test_from_the_hub_itself(monkeypatch, tmp_path):
    data = hubdata.femnist_dict(sizes=SIZES)
    asked = []

    def load_dataset(hub_id, *args, **kwargs):
        asked.append(hub_id)
        return data

    monkeypatch.setattr(online, "hub_online", lambda: True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    source = FEMNIST(DatasetConfig(name="femnist"))
    assert source.load().x.shape == (sum(SIZES), 1, 28, 28)
    assert len(source.column("writer_id")) == sum(SIZES)
    assert set(asked) == {"flwrlabs/femnist"}


def test_the_cnn_takes_its_images_and_gives_62_scores(tmp_path, cache_dir):
    from flayer.data.federated import load_client

    folder = hubdata.write_femnist(tmp_path / "femnist", sizes=SIZES, fmt="parquet")
    cfg = make_config("dataset=femnist", f"dataset.path={folder}", f"cache_dir={cache_dir}",
                      "partition=natural", "num_clients=3", "model=cnn")
    data = load_client(cfg, 0)
    x = data.to_input(data.x_train)
    assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    model = build_model(cfg, data.source.spec)
    assert model(x).shape == (len(x), 62)
