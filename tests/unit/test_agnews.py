"""AG News: tokens, the pool of pool ids, the vocabulary from training texts, its files."""

import datasets
import numpy as np
import pytest
import torch

from flayer.config.schema import DatasetConfig
from flayer.data import cache
from flayer.data.federated import client_splits, load_client, splits_file
from flayer.data.hub import online
from flayer.data.sources.agnews import AGNews, read_vocab, tokenize, write_vocab
from flayer.util.errors import ConfigError, DataError
from tests import hubdata
from tests.helpers import make_config


@pytest.fixture(autouse=True)
def fresh_reads():
    """Tests replace `datasets.load_dataset` and play other processes: nothing read is kept."""
    cache.forget()
    yield
    cache.forget()


def source_for(tmp_path, rows, fmt="save_to_disk", **settings) -> AGNews:
    folder = hubdata.write(hubdata.agnews_from_rows(rows), tmp_path / "ag", fmt)
    return AGNews(DatasetConfig(name="agnews", path=str(folder), **settings))


ROWS = {  # train: a twice, b twice, c once; d appears in test rows only
    "test": [("D b!", 3)],
    "train": [("B a b", 0), ("c A", 1)],
}


def test_tokens_are_lower_case_words_and_single_punctuation():
    assert tokenize("U.S. Stocks' rally!  Wall_St up 3.5%") == [
        "u", ".", "s", ".", "stocks", "'", "rally", "!", "wall_st", "up", "3", ".", "5", "%"]
    assert tokenize("<pad>") == ["<", "pad", ">"]  # never the reserved tokens


@pytest.mark.parametrize("fmt", hubdata.TEXT_FORMATS)
def test_pool_is_padded_cut_and_train_first(tmp_path, fmt):
    long_text = " ".join(f"w{i}" for i in range(30))
    rows = {"test": [("short one", 2)], "train": [(long_text, 1), ("x y", 0)]}
    source = source_for(tmp_path, rows, fmt, max_len=8)
    source.check()
    assert source.num_samples() == 3
    pool = source.load()
    assert pool.x.shape == (3, 8) and pool.x.dtype == np.int32
    assert pool.y.tolist() == [1, 0, 2] and pool.y.dtype == np.int64
    assert (pool.x[0] > 0).all()  # cut to max_len
    assert (pool.x[1, 2:] == 0).all() and (pool.x[1, :2] > 0).all()  # padded with 0
    assert (pool.x[2, 2:] == 0).all()


def test_vocabulary_comes_from_training_rows_only(tmp_path):
    source = source_for(tmp_path, ROWS, max_len=5)
    pool = source.load()
    folder = tmp_path / "split"
    source.fit(pool.x, np.array([0, 1]), folder)
    # by falling count, ties alphabetically; d (test only) and ! are not in it
    assert source.vocab == ["<pad>", "<unk>", "a", "b", "c"]
    assert source.spec.vocab_size == 5 and source.spec.input_shape == (5,)
    assert source.spec.num_classes == 4
    ids = source.to_input(torch.from_numpy(pool.x))
    assert ids.dtype == torch.int64
    assert ids.tolist() == [[3, 2, 3, 0, 0], [4, 2, 0, 0, 0], [1, 3, 1, 0, 0]]
    assert read_vocab(folder / "vocab.txt") == source.vocab


def test_vocabulary_is_deterministic_and_cached_for_other_processes(tmp_path):
    data = hubdata.write_agnews(tmp_path / "ag", n_per_split=20)
    cfg = DatasetConfig(name="agnews", path=str(data), max_len=12)
    first = AGNews(cfg)
    pool = first.load()
    train = np.arange(0, 40, 2)
    first.fit(pool.x, train, tmp_path / "a")
    rebuilt = AGNews(cfg)
    rebuilt.fit(pool.x, train, tmp_path / "b")
    assert rebuilt.vocab == first.vocab
    a, b = (tmp_path / part / "vocab.txt" for part in "ab")
    assert a.read_bytes() == b.read_bytes()

    # another process: the pool comes from the cache, the data is not read again
    cache.forget()  # as in another process
    other = AGNews(cfg)
    other.data.splits = lambda columns: pytest.fail("the data was read again")
    other.fit(pool.x, np.arange(5), tmp_path / "a")  # the cached vocabulary wins
    assert other.vocab == first.vocab
    x = torch.from_numpy(pool.x[:6])
    assert torch.equal(other.to_input(x), first.to_input(x))


def test_a_process_that_did_not_decode_the_pool_builds_the_same_vocabulary(tmp_path):
    data = hubdata.write_agnews(tmp_path / "ag", n_per_split=10, fmt="parquet")
    cfg = DatasetConfig(name="agnews", path=str(data), max_len=10)
    pool = AGNews(cfg).load()
    here = AGNews(cfg)
    here.fit(pool.x, np.arange(12), tmp_path / "a")
    cache.forget()  # as in another process
    there = AGNews(cfg)
    there.fit(pool.x, np.arange(12), tmp_path / "b")
    assert there.vocab == here.vocab
    x = torch.from_numpy(pool.x)
    assert torch.equal(there.to_input(x), here.to_input(x))


def test_a_given_vocabulary_file_is_used_instead_of_building_one(tmp_path):
    vocab_file = tmp_path / "shared.txt"
    write_vocab(vocab_file, ["<pad>", "<unk>", "zebra", "b"])
    source = source_for(tmp_path, ROWS, max_len=4, vocab=str(vocab_file))
    source.check()
    assert source.spec.vocab_size == 4  # known from the file, before fit
    pool = source.load()
    folder = tmp_path / "split"
    source.fit(pool.x, np.array([0, 1]), folder)
    assert not (folder / "vocab.txt").exists()
    assert source.to_input(torch.from_numpy(pool.x)).tolist() == [
        [3, 1, 3, 0], [1, 1, 0, 0], [1, 3, 1, 0]]


def test_bad_vocabulary_settings_are_named(tmp_path):
    missing = source_for(tmp_path, ROWS, vocab=str(tmp_path / "nope.txt"))
    with pytest.raises(ConfigError, match="dataset.vocab"):
        missing.check()
    bad = tmp_path / "bad.txt"
    bad.write_text("a\nb\n")
    with pytest.raises(DataError, match="<pad>"):
        read_vocab(bad)
    with pytest.raises(ConfigError, match="dataset.max_len"):
        AGNews(DatasetConfig(name="agnews", path=str(tmp_path / "ag"), max_len=0)).check()


def test_hub_path_and_pool_fingerprint_follow_max_len(monkeypatch):
    data = hubdata.agnews_dict(n_per_split=5)
    monkeypatch.setattr(online, "hub_online", lambda: True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id, *a, **k: data)
    source = AGNews(DatasetConfig(name="agnews", max_len=6))
    source.check()
    assert source.num_samples() == 10
    assert source.load().x.shape == (10, 6)
    assert AGNews(DatasetConfig(name="agnews", max_len=7)).fingerprint() != source.fingerprint()


def test_clients_get_token_ids_and_the_vocabulary_file(tmp_path, cache_dir):
    folder = hubdata.write_agnews(tmp_path / "ag", n_per_split=20, fmt="parquet")
    cfg = make_config("dataset=agnews", f"dataset.path={folder}", f"cache_dir={cache_dir}",
                      "dataset.max_len=16", "num_clients=2", "partition.alpha=1.0",
                      "partition.min_partition_size=4")
    clients = [load_client(cfg, k) for k in range(2)]
    source = clients[0].source
    spec = source.spec
    assert spec.input_shape == (16,) and spec.num_classes == 4
    for data in clients:
        assert data.x_train.dtype == torch.int32 and data.x_train.shape[1:] == (16,)
        ids = data.to_input(data.x_train)
        assert ids.dtype == torch.int64 and int(ids.max()) < spec.vocab_size
        assert (ids[data.x_train == 0] == 0).all()
        assert (ids[data.x_train > 0] >= 1).all()
    vocab_file = splits_file(cfg).with_suffix("") / "vocab.txt"
    assert read_vocab(vocab_file) == source.vocab
    # every token of the clients' training texts is in the vocabulary
    train = np.concatenate([s.train for s in client_splits(cfg)])
    assert len(train) == sum(d.num_train for d in clients)
    for data in clients:
        assert (data.to_input(data.x_train)[data.x_train > 0] >= 2).all()


def test_generated_texts_are_learnable():
    """Word counts of each topic's training texts classify the test texts."""
    data = hubdata.agnews_dict(n_per_split=40)
    counts: dict[int, dict[str, int]] = {}
    for row in data["train"]:
        for token in tokenize(row["text"]):
            topic = counts.setdefault(row["label"], {})
            topic[token] = topic.get(token, 0) + 1

    def score(text: str, label: int) -> float:
        total = sum(counts[label].values())
        return sum(np.log((counts[label].get(t, 0) + 1) / total) for t in tokenize(text))

    right = [max(counts, key=lambda lab: score(r["text"], lab)) == r["label"]
             for r in data["test"]]
    assert np.mean(right) >= 0.9
