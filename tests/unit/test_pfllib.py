"""PFLlib dataset folders: clients come through exactly as PFLlib wrote them."""

import numpy as np
import pytest
import torch

from flayer.config.schema import DatasetConfig
from flayer.config.validation import validate
from flayer.data.federated import load_client
from flayer.data.sources.pfllib import PFLlibFolder
from flayer.util.errors import ConfigError, DataError
from tests.helpers import make_config
from tests.pfllibdata import image_clients, token_pairs, write_pfllib

SIZES = [(5, 2), (8, 3), (3, 4)]


def config_for(folder, cache_dir, clients=3):
    return make_config("dataset=pfllib", f"dataset.path={folder}", f"num_clients={clients}",
                       f"cache_dir={cache_dir}")


def source_for(folder):
    return PFLlibFolder(DatasetConfig(name="pfllib", path=str(folder)))


@pytest.fixture
def images(tmp_path):
    clients = image_clients(SIZES)
    return write_pfllib(tmp_path / "Cifar", clients, num_classes=3), clients


def test_each_client_gets_its_own_samples_unchanged_and_in_order(images, cache_dir):
    folder, clients = images
    cfg = config_for(folder, cache_dir)
    for k, (x_train, y_train, x_test, y_test) in enumerate(clients):
        data = load_client(cfg, k)
        assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
        np.testing.assert_array_equal(data.x_train.numpy(), x_train)
        np.testing.assert_array_equal(data.y_train.numpy(), y_train)
        np.testing.assert_array_equal(data.x_test.numpy(), x_test)
        np.testing.assert_array_equal(data.y_test.numpy(), y_test)
        # already normalized by PFLlib: to_input only makes a float32 tensor
        x = data.to_input(data.x_train)
        assert x.dtype == torch.float32
        np.testing.assert_array_equal(x.numpy(), x_train)
    assert load_client(cfg, 0).num_classes == 3


def test_the_pool_layout_and_counts(images):
    folder, _ = images
    source = source_for(folder)
    source.check()
    assert source.num_clients() == 3 and source.num_samples() == 25
    splits = source.fixed_splits()
    assert [s.train.tolist() for s in splits] == [[0, 1, 2, 3, 4], [7, *range(8, 15)],
                                                 [18, 19, 20]]
    assert [s.test.tolist() for s in splits] == [[5, 6], [15, 16, 17], [21, 22, 23, 24]]
    spec = source.spec
    assert spec.input_shape == (1, 4, 4) and spec.num_classes == 3 and spec.vocab_size is None


def test_a_matching_folder_passes_validation(tmp_path, cache_dir):
    folder = write_pfllib(tmp_path / "d", image_clients([(4, 2)] * 3, shape=(1, 28, 28)),
                          num_classes=3)
    validate(config_for(folder, cache_dir))


def test_num_clients_must_match_the_folder(images, cache_dir):
    folder, _ = images
    with pytest.raises(ConfigError, match="must be 3.*has 3 clients") as err:
        validate(config_for(folder, cache_dir, clients=4))
    assert err.value.setting == "num_clients" and err.value.value == 4
    assert not cache_dir.exists()  # refused before decoding anything


def test_a_missing_folder_is_a_clear_error(tmp_path, cache_dir):
    with pytest.raises(ConfigError, match="does not exist.*generate_") as err:
        validate(config_for(tmp_path / "nowhere", cache_dir))
    assert err.value.setting == "dataset.path"


def test_a_missing_test_file_is_named(images, cache_dir):
    folder, _ = images
    (folder / "test" / "1.npz").unlink()
    with pytest.raises(DataError, match=r"lacks test/1\.npz"):
        source_for(folder).check()
    with pytest.raises(ConfigError, match=r"test/1\.npz"):
        validate(config_for(folder, cache_dir))


@pytest.mark.parametrize(("remove", "text"), [("config.json", "lacks config.json"),
                                              ("test", "has no test/ folder")])
def test_missing_pieces_are_named(images, remove, text):
    folder, _ = images
    path = folder / remove
    if path.is_dir():
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    else:
        path.unlink()
    with pytest.raises(DataError, match=text):
        source_for(folder).check()


def test_sample_count_without_label_statistics_reads_the_files(tmp_path):
    stats = {"Size of samples for labels in clients": None}
    folder = write_pfllib(tmp_path / "d", image_clients(SIZES), num_classes=3, **stats)
    assert source_for(folder).num_samples() == 25


def test_config_that_disagrees_with_the_files_is_refused(tmp_path):
    folder = write_pfllib(tmp_path / "d", image_clients(SIZES), num_classes=3, num_clients=4)
    with pytest.raises(DataError, match="num_clients=4.*3 clients"):
        source_for(folder).check()


def test_unreadable_config_is_refused(images):
    folder, _ = images
    (folder / "config.json").write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON"):
        source_for(folder).check()


def test_classes_fall_back_to_the_largest_label(tmp_path):
    clients = image_clients(SIZES, num_classes=5)
    folder = write_pfllib(tmp_path / "d", clients)
    top = max(int(max(c[1].max(), c[3].max())) for c in clients)
    assert source_for(folder).spec.num_classes == top + 1


def test_labels_beyond_num_classes_are_refused(tmp_path):
    folder = write_pfllib(tmp_path / "d", image_clients(SIZES, num_classes=5), num_classes=2)
    with pytest.raises(DataError, match="num_classes=2"):
        source_for(folder).load()


def text_clients(pairs):
    rng = np.random.default_rng(1)
    clients = []
    for n_train, n_test in [(4, 2), (3, 3)]:
        arrays = []
        for n in (n_train, n_test):
            ids = rng.integers(1, 50, (n, 6))
            ids[:, 4:] = 0  # padding, as PFLlib pads to max_len
            arrays += [token_pairs(ids) if pairs else ids, rng.integers(0, 4, n)]
        clients.append(tuple(arrays))
    return clients


def ids_of(x):
    return np.array([row[0] for row in x]) if x.dtype == object else x


@pytest.mark.parametrize("pairs", [True, False], ids=["id-length-pairs", "plain-ids"])
def test_token_ids_come_through_with_a_vocabulary_size(tmp_path, cache_dir, pairs):
    clients = text_clients(pairs)
    folder = write_pfllib(tmp_path / "AGNews", clients, num_classes=4)
    cfg = config_for(folder, cache_dir, clients=2)
    for k, (x_train, y_train, x_test, y_test) in enumerate(clients):
        data = load_client(cfg, k)
        assert data.x_train.dtype == torch.int64
        np.testing.assert_array_equal(data.x_train.numpy(), ids_of(x_train))
        np.testing.assert_array_equal(data.y_train.numpy(), y_train)
        np.testing.assert_array_equal(data.x_test.numpy(), ids_of(x_test))
        np.testing.assert_array_equal(data.y_test.numpy(), y_test)
        assert data.to_input(data.x_test).dtype == torch.int64
    spec = load_client(cfg, 0).source.spec
    top = max(int(ids_of(x).max()) for c in clients for x in (c[0], c[2]))
    assert spec.vocab_size == top + 1 and spec.input_shape == (6,) and spec.num_classes == 4


def test_ragged_token_rows_are_refused(tmp_path):
    ragged = np.array([([1, 2, 3], 3), ([4, 5], 2)], dtype=object)
    folder = write_pfllib(tmp_path / "d", [(ragged, np.array([0, 1]), ragged, np.array([1, 0]))],
                          num_classes=2)
    with pytest.raises(DataError, match="different lengths"):
        source_for(folder).load()


def test_the_fingerprint_follows_the_files(images):
    folder, clients = images
    before = source_for(folder).fingerprint()
    x, y, _, _ = clients[2]
    write_pfllib(folder, [*clients[:2], (x, y, x[:1], y[:1])], num_classes=3)
    assert source_for(folder).fingerprint() != before


def test_a_pfllib_folder_runs_with_its_clients_unchanged(tmp_path, cache_dir):
    from tests.localgrid import run_local

    sizes = [(12, 4), (9, 5), (6, 3)]
    folder = write_pfllib(tmp_path / "Cifar10", image_clients(sizes, shape=(3, 32, 32)),
                          num_classes=3)
    cfg = make_config("dataset=pfllib", f"dataset.path={folder}", "num_clients=3",
                      f"cache_dir={cache_dir}", "num_rounds=1", "batch_size=4",
                      "progress=false")
    validate(cfg)
    _, records, _ = run_local(cfg)
    assert [r.failures for r in records] == [0, 0]
    for record in records:
        assert [(c.partition_id, c.num_test) for c in record.clients] == [
            (k, n_test) for k, (_, n_test) in enumerate(sizes)]
    assert records[1].trained == 3


def test_a_summary_of_data_with_its_own_clients_shows_no_partition_settings():
    from flayer.run.folder import run_info

    info = run_info(make_config("dataset=pfllib", "dataset.path=/nowhere"))
    assert info["partition"] == "own" and "alpha" not in info
    assert run_info(make_config())["alpha"] == 0.1  # a split pool shows what split it
