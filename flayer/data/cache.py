"""What the data layer keeps so that it does not redo work.

- On disk: decoded pools and client splits, keyed by everything that shapes them
  (`cache_key`, the atomic writers), shared by every process of a run.
- In memory, per process: `Memo`s. Every process (each client actor, each node) asks for the
  same pools, splits, listings and fitted sources many times while it builds its clients and
  trains round after round; a Memo keeps each value once. Each Memo names its value and the
  parts of its key, which hold everything that shapes the value. `forget()` drops what every
  Memo holds, so that data changed in place, or a replaced reader, is read afresh.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from flayer.util.atomic import write_atomic

V = TypeVar("V")


def cache_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def save_arrays_atomic(file: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz that concurrent readers see either not at all or whole."""
    write_atomic(file, lambda f: np.savez(f, **arrays))


def save_array_atomic(file: Path, array: np.ndarray) -> None:
    write_atomic(file, lambda f: np.save(f, array))


class Memo(Generic[V]):
    """One kind of value, made once per process per key.

    `what` names the value and `key` the parts of its key (everything that shapes the value),
    for readers and for the error a malformed key raises. `keep` bounds how many values stay
    (the least recently used go first); None keeps all."""

    def __init__(self, what: str, key: tuple[str, ...], keep: int | None = None) -> None:
        self.what = what
        self.key = key
        self.keep = keep
        self._values: OrderedDict[tuple[Hashable, ...], V] = OrderedDict()
        self._lock = threading.Lock()  # guards the bookkeeping, never a `make`
        _MEMOS.append(self)

    def _checked(self, key: tuple[Hashable, ...]) -> tuple[Hashable, ...]:
        if len(key) != len(self.key):
            raise ValueError(f"{self.what}: key {key!r} does not match its parts {self.key}")
        return key

    def get(self, key: tuple[Hashable, ...], make: Callable[[], V]) -> V:
        """The value under `key`, made by `make()` where this process has none yet."""
        key = self._checked(key)
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = make()
        self.put(key, value)
        return value

    def put(self, key: tuple[Hashable, ...], value: V) -> None:
        """Keep a value made on the way (e.g. while decoding the data for something else)."""
        key = self._checked(key)
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while self.keep is not None and len(self._values) > self.keep:
                self._values.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


_MEMOS: list[Memo[Any]] = []  # every Memo made, for `forget`


def forget() -> None:
    """Drop every value this process keeps in memory (the disk cache stays): a copy changed at
    the same place, or a replaced reader, is then read afresh."""
    for memo in _MEMOS:
        memo.clear()
