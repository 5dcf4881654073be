import numpy as np
import pytest

from flayer.config.schema import DatasetConfig
from flayer.data.fetch_fmnist import split_to_arrays, write_idx
from flayer.data.sources.fmnist import FashionMNIST, read_idx
from flayer.util.errors import DataError
from tests.helpers import write_fake_fmnist


def test_idx_round_trip(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x.gz", data)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), data)


@pytest.mark.parametrize("gz", [True, False])
def test_pool_merges_train_and_test_gzipped_or_not(tmp_path, gz):
    folder = write_fake_fmnist(tmp_path / "d", n_train=30, n_test=10, gz=gz)
    source = FashionMNIST(DatasetConfig(name="fmnist", path=str(folder)))
    assert source.num_samples() == 40
    pool = source.load()
    assert pool.x.shape == (40, 1, 28, 28) and pool.x.dtype == np.uint8
    assert pool.y.dtype == np.int64 and set(pool.y) <= set(range(10))


def test_missing_files_name_what_is_missing_and_how_to_get_it(tmp_path):
    folder = write_fake_fmnist(tmp_path / "d", n_train=10, n_test=10)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*dataset-fashion-mnist"):
        FashionMNIST(DatasetConfig(name="fmnist", path=str(folder))).check()


def test_hub_rows_become_idx_arrays():
    from PIL import Image

    split = {"image": [Image.fromarray(np.full((28, 28), i, np.uint8)) for i in range(3)],
             "label": [0, 5, 9]}
    x, y = split_to_arrays(split)
    assert x.shape == (3, 28, 28) and x[2, 0, 0] == 2 and y.tolist() == [0, 5, 9]
