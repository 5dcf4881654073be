"""Tiny PFLlib dataset folders in PFLlib's on-disk format, for tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ClientArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_tr, y_tr, x_te, y_te


def write_pfllib(folder: Path, clients: Sequence[ClientArrays], num_classes: int | None = None,
                 **config: Any) -> Path:
    """Write `clients` as PFLlib does: train/<k>.npz and test/<k>.npz, each a compressed
    npz whose `data` is a pickled {'x', 'y'} dict, plus config.json with PFLlib's keys
    (num_classes left out when None; extra keys in `config` override or add entries)."""
    for part in ("train", "test"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    statistic = []
    for k, (x_train, y_train, x_test, y_test) in enumerate(clients):
        for part, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            with open(folder / part / f"{k}.npz", "wb") as f:
                np.savez_compressed(f, data={"x": x, "y": y})
        labels = np.concatenate([np.asarray(y_train), np.asarray(y_test)])
        statistic.append([[int(c), int((labels == c).sum())] for c in np.unique(labels)])
    settings: dict[str, Any] = {
        "num_clients": len(clients), "num_classes": num_classes, "non_iid": True,
        "balance": False, "partition": "dir", "Size of samples for labels in clients": statistic,
        "alpha": 0.1, "batch_size": 10,
    }
    settings.update(config)
    if settings["num_classes"] is None:
        del settings["num_classes"]
    (folder / "config.json").write_text(json.dumps(settings))
    return folder


def token_pairs(ids: np.ndarray) -> np.ndarray:
    """Token rows in PFLlib's AG News form: an n x 2 object array of (id list, length)."""
    lengths = (ids != 0).sum(axis=1)
    return np.array([(row.tolist(), int(n)) for row, n in zip(ids, lengths, strict=True)],
                    dtype=object)


def image_clients(sizes: Sequence[tuple[int, int]], shape: tuple[int, ...] = (1, 4, 4),
                  num_classes: int = 3, seed: int = 0) -> list[ClientArrays]:
    """Float32 "normalized images" whose values are all distinct across clients (any mix-up
    or rescaling shows), with labels cycling through the classes."""
    rng = np.random.default_rng(seed)
    clients, start = [], 0
    per = int(np.prod(shape))
    for n_train, n_test in sizes:
        arrays = []
        for n in (n_train, n_test):
            values = np.arange(start, start + n * per, dtype=np.float32) / 1000 - 0.5
            arrays.append(values.reshape(n, *shape))
            arrays.append(rng.integers(0, num_classes, n).astype(np.int64))
            start += n * per
        clients.append((arrays[0], arrays[1], arrays[2], arrays[3]))
    return clients
