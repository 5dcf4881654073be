"""Shakespeare from the hub's schema (flwrlabs/shakespeare: character_id, x, y): the same ids as
the plays' source for the same text, the roles as natural clients split in time, and the
errors a user meets."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from flayer.config.schema import DatasetConfig
from flayer.config.validation import validate
from flayer.data import cache
from flayer.data.characters import VOCAB, encode
from flayer.data.federated import load_client
from flayer.data.source import DataSpec
from flayer.data.sources.shakespeare import Shakespeare, windows
from flayer.data.sources.shakespeare_hub import WINDOW, ShakespeareHub
from flayer.util.errors import ConfigError, DataError
from tests import hubdata
from tests.helpers import make_config
from tests.playdata import small_plays


@pytest.fixture(autouse=True)
def fresh_reads():
    cache.forget()
    yield
    cache.forget()


def text_of(length: int, seed: int) -> str:
    """A text of LEAF's characters (no newline: LEAF's windows hold none)."""
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(VOCAB[1:]), size=length))


# roles of 700, 450 and 300 characters: 620, 370 and 220 windows
TEXTS = {"PLAY_A_KING": text_of(700, 0), "PLAY_A_FOOL": text_of(450, 1),
         "PLAY_B_PAGE": text_of(300, 2)}


def hub_config(folder, cache_dir, *overrides):
    return make_config("dataset=shakespeare_hub", f"dataset.path={folder}",
                       f"cache_dir={cache_dir}", "partition=natural", "model=char_lstm",
                       *overrides)


@pytest.mark.parametrize("fmt", hubdata.TEXT_FORMATS)
def test_the_pool_is_every_window_in_leafs_ids(tmp_path, fmt):
    folder = hubdata.write_shakespeare(tmp_path / "hub", TEXTS, fmt)
    source = ShakespeareHub(DatasetConfig(name="shakespeare_hub", path=str(folder), max_len=80))
    source.check()
    pool = source.load()
    expected = [windows(encode(text), WINDOW) for text in TEXTS.values()]
    np.testing.assert_array_equal(pool.x, np.concatenate([x for x, _ in expected]))
    np.testing.assert_array_equal(pool.y, np.concatenate([y for _, y in expected]))
    assert pool.x.dtype == np.uint8 and pool.y.dtype == np.int64
    assert source.num_samples() == len(pool.y)
    assert source.column("character_id").tolist() == [
        role for role, text in TEXTS.items() for _ in range(len(text) - WINDOW)]
    assert source.spec == DataSpec((80,), 80, vocab_size=80)


def test_each_role_is_a_client_split_in_time(tmp_path, cache_dir):
    folder = hubdata.write_shakespeare(tmp_path / "hub", TEXTS)
    cfg = hub_config(folder, cache_dir, "num_clients=2")
    validate(cfg)  # PAGE's 220 windows leave none for testing at 0.75: left out
    seen = set()
    for k in range(2):
        data = load_client(cfg, k)
        x = data.to_input(data.x_train).numpy()
        (role,) = [r for r, t in TEXTS.items() if np.array_equal(x[0], encode(t[:WINDOW]))]
        ids = encode(TEXTS[role]).astype(np.int64)
        n = len(ids) - WINDOW
        n_train = int(0.75 * n)
        assert len(data.y_train) == n_train and len(data.y_test) == n - n_train - WINDOW
        np.testing.assert_array_equal(x[-1], ids[n_train - 1:n_train - 1 + WINDOW])
        first_test = data.to_input(data.x_test[:1]).numpy()[0]
        cut = n_train + WINDOW  # the first window after the last training target
        np.testing.assert_array_equal(first_test, ids[cut:cut + WINDOW])
        seen.add(role)
    assert seen == {"PLAY_A_KING", "PLAY_A_FOOL"}
    with pytest.raises(ConfigError, match="at most 2: the data has 3 clients.*at least 321"):
        validate(hub_config(folder, tmp_path / "other", "num_clients=3"))


def test_the_same_text_gives_the_plays_source_clients(tmp_path, cache_dir):
    """Roles read from the plays, served as the hub serves LEAF's: the same clients (inputs,
    targets, train and test) at LEAF's 0.8."""
    plays = small_plays(tmp_path / "plays", roles=3, lines=14, width=40)
    local = Shakespeare(DatasetConfig(name="shakespeare", path=str(plays), max_len=80))
    texts = {role.name: "".join(VOCAB[i] for i in role.ids) for role in local.roles()}
    assert len(texts) == 3 and min(len(t) for t in texts.values()) > 481
    hub = hubdata.write_shakespeare(tmp_path / "hub", texts, "parquet")

    def clients(cfg):
        validate(cfg)
        out = {}
        for k in range(cfg.num_clients):
            data = load_client(cfg, k)
            parts = (data.x_train, data.y_train, data.x_test, data.y_test)
            out[data.x_train[0].numpy().tobytes()] = [p.numpy() for p in parts]
        return out

    mine = clients(hub_config(hub, cache_dir, "num_clients=3", "partition.train_fraction=0.8"))
    theirs = clients(make_config("dataset=shakespeare", "model=char_lstm", f"dataset.path={plays}",
                                 f"cache_dir={tmp_path / 'local'}", "num_clients=3"))
    assert mine.keys() == theirs.keys()
    for key, parts in mine.items():
        for a, b in zip(parts, theirs[key], strict=True):
            np.testing.assert_array_equal(a, b)


def test_characters_outside_the_vocabulary_are_spaces(tmp_path, caplog):
    text = text_of(100, 3)
    odd = text[:10] + "@" + text[11:40] + "é" + text[41:]
    folder = hubdata.write_shakespeare(tmp_path / "hub", {"ROLE": odd})
    source = ShakespeareHub(DatasetConfig(name="shakespeare_hub", path=str(folder), max_len=80))
    with caplog.at_level(logging.INFO):
        pool = source.load()
    plain = text[:10] + " " + text[11:40] + " " + text[41:]
    x, y = windows(encode(plain), WINDOW)
    np.testing.assert_array_equal(pool.x, x)
    np.testing.assert_array_equal(pool.y, y)
    assert "characters outside LEAF's vocabulary read as spaces" in caplog.text


def test_a_window_of_another_length_is_named(tmp_path):
    data = hubdata.shakespeare_dict({"ROLE": text_of(90, 4)})
    rows = data["train"].to_dict()
    rows["x"][3] = rows["x"][3][:70]
    data["train"] = data["train"].from_dict(rows, features=data["train"].features)
    folder = hubdata.write(data, tmp_path / "hub", "save_to_disk")
    source = ShakespeareHub(DatasetConfig(name="shakespeare_hub", path=str(folder), max_len=80))
    with pytest.raises(DataError, match="column x: row 3 holds 70 characters"):
        source.load()


@pytest.mark.parametrize(("override", "setting"), [
    ("dataset.max_len=40", "dataset.max_len"), ("dataset.vocab=v.txt", "dataset.vocab")])
def test_the_window_and_vocabulary_are_the_hubs(tmp_path, cache_dir, override, setting):
    folder = hubdata.write_shakespeare(tmp_path / "hub", TEXTS)
    with pytest.raises(ConfigError) as err:
        validate(hub_config(folder, cache_dir, "num_clients=1", override))
    assert err.value.setting == setting
