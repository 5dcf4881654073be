"""The per-process memory of the data layer: values made once, bounded where asked, and all
dropped by one `forget`."""

import datasets
import pytest

from flayer.config.schema import DatasetConfig
from flayer.data import cache
from flayer.data.cache import Memo
from flayer.data.hub import online
from flayer.data.sources.images import CIFAR10
from tests import hubdata


@pytest.fixture(autouse=True)
def fresh():
    cache.forget()
    yield
    cache.forget()


def test_a_value_is_made_once_per_key():
    memo: Memo[list[int]] = Memo("test values", key=("name", "size"))
    made = []

    def make(n: int):
        return lambda: made.append(n) or list(range(n))

    assert memo.get(("a", 3), make(3)) == [0, 1, 2]
    assert memo.get(("a", 3), make(99)) == [0, 1, 2]
    assert memo.get(("a", 4), make(4)) == [0, 1, 2, 3]
    assert made == [3, 4]
    memo.put(("b", 1), [7])
    assert memo.get(("b", 1), make(5)) == [7] and made == [3, 4]


def test_a_key_must_have_the_named_parts():
    memo: Memo[int] = Memo("test values", key=("file", "num_clients"))
    with pytest.raises(ValueError, match="num_clients"):
        memo.get(("only-the-file",), lambda: 1)


def test_a_bounded_memo_drops_the_least_recently_used():
    memo: Memo[str] = Memo("test values", key=("k",), keep=2)
    memo.get(("a",), lambda: "a")
    memo.get(("b",), lambda: "b")
    memo.get(("a",), lambda: "fresh a")  # used again: b is now the oldest
    memo.get(("c",), lambda: "c")
    assert ("a",) in memo and ("c",) in memo and ("b",) not in memo and len(memo) == 2


def test_forget_drops_every_memo():
    first: Memo[int] = Memo("test values", key=("k",))
    second: Memo[int] = Memo("other test values", key=("k",))
    first.put(("x",), 1)
    second.put(("y",), 2)
    cache.forget()
    assert len(first) == 0 and len(second) == 0


def test_a_replaced_hub_loader_is_asked_only_after_forget(monkeypatch):
    """A hub dataset is kept per process under its id alone: a test that replaces the loader
    clears the memory itself."""
    calls = []

    def loader(n: int):
        def load_dataset(hub_id, *args, **kwargs):
            calls.append(n)
            return hubdata.cifar10_dict(n_per_split=n)
        return load_dataset

    monkeypatch.setattr(online, "hub_online", lambda: True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets, "load_dataset", loader(2))
    assert CIFAR10(DatasetConfig(name="cifar10")).num_samples() == 4
    monkeypatch.setattr(datasets, "load_dataset", loader(3))
    assert CIFAR10(DatasetConfig(name="cifar10")).num_samples() == 4  # kept
    cache.forget()
    assert CIFAR10(DatasetConfig(name="cifar10")).num_samples() == 6
    assert calls == [2, 3]
