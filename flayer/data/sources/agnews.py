"""AG News (4 news topics) from the Hugging Face hub, as token ids.

Tokens: the text in lower case, split into runs of letters, digits and underscores (`\\w+`) and
single other non-space characters (punctuation), so "U.S. stocks' rally!" gives
u . s . stocks ' rally !. Each sample keeps its first `dataset.max_len` tokens, padded with 0.

The pool is stored before the split, so it cannot hold vocabulary ids yet: it holds "pool ids",
1 + the token's rank in the sorted list of every token of the pool (0 = padding). After the
split, `fit` builds the vocabulary from the clients' training texts only: `<pad>` (0), `<unk>`
(1), then every token of those texts by falling count, ties alphabetically. A token the training
texts lack maps to `<unk>`. The vocabulary is cached as `vocab.txt` in the split's cache folder
(one token per line, line k = id k), the format `dataset.vocab` reads; `to_input` turns pool ids
into vocabulary ids through a lookup table cached beside it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch

from flayer.config.schema import DatasetConfig
from flayer.data.cache import Memo, save_array_atomic
from flayer.data.hub import Storage, locate, read_labels
from flayer.data.source import DATASETS, DataSource, DataSpec, Pool
from flayer.util.atomic import write_atomic
from flayer.util.errors import ConfigError, DataError, reading

log = logging.getLogger(__name__)

PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1; the tokenizer never yields them (< and > split off)
TOKEN = re.compile(r"\w+|[^\w\s]")
TOKENIZER_VERSION = "lower-w+-punct-1"  # part of the pool's cache key
VOCAB_FILE = "vocab.txt"

# kept from `load` for `fit` in the same process (re-read where this process did not decode)
_POOL_TOKENS: Memo[list[str]] = Memo("sorted pool tokens of AG News",
                                     key=("pool fingerprint",))


def tokenize(text: str) -> list[str]:
    """Lower-case words (\\w+) and single punctuation characters, in order."""
    return TOKEN.findall(text.lower())


def read_vocab(file: Path) -> list[str]:
    """A vocabulary file: UTF-8, one token per line, line k = id k, starting <pad>, <unk>."""
    with reading(file, "a vocabulary file (UTF-8 text)",
                 "give dataset.vocab a vocabulary file, or null to build one from the data"):
        lines = file.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    bad = next((t for t in lines if not t or t != t.strip() or len(t.split()) != 1), None)
    if lines[:2] != [PAD, UNK] or bad is not None or len(set(lines)) != len(lines):
        raise DataError(
            f"{file} is not a vocabulary file: it must hold one distinct token per line (no "
            f"spaces), line k being id k, the first two lines {PAD} and {UNK}"
            + (f" (bad line {bad!r})" if bad is not None else "")
        )
    return lines


def write_vocab(file: Path, vocab: list[str]) -> None:
    """One token per line; concurrent readers see the old file or the whole new one."""
    text = "\n".join(vocab) + "\n"
    write_atomic(file, lambda f: f.write(text.encode("utf-8")))


def build_vocab(ids: np.ndarray, tokens: list[str]) -> list[str]:
    """<pad>, <unk>, then the tokens the pool ids `ids` hold, by falling count, ties
    alphabetically (`tokens[i - 1]` is pool id i)."""
    counts = np.bincount(np.asarray(ids, dtype=np.int64).ravel(), minlength=len(tokens) + 1)
    present = np.flatnonzero(counts[1:]) + 1
    order = sorted(present.tolist(), key=lambda i: (-int(counts[i]), tokens[i - 1]))
    return [PAD, UNK] + [tokens[i - 1] for i in order]


def _given_vocab(cfg: DatasetConfig) -> Path:
    assert cfg.vocab
    return Path(os.path.expanduser(cfg.vocab))


class AGNews(DataSource):
    name = "agnews"
    tokens = True
    hub_id = "fancyzhx/ag_news"
    columns = {"text": "text", "label": "label"}
    num_classes = 4

    def __init__(self, cfg: DatasetConfig) -> None:
        super().__init__(cfg)
        self.vocab: list[str] | None = None
        self.vocab_file: Path | None = None  # where the vocabulary in use was read or written
        self._lookup: torch.Tensor | None = None  # pool id -> vocabulary id

    @functools.cached_property
    def data(self) -> Storage:
        """Where the texts are: found on first use, so that a bad dataset.path is reported by
        `check`."""
        return locate(self.hub_id, self.cfg.path, images=False)

    @property
    def max_len(self) -> int:
        return self.cfg.max_len

    @classmethod
    def _spec_for(cls, cfg: DatasetConfig, vocab: list[str]) -> DataSpec:
        return DataSpec(input_shape=(cfg.max_len,), num_classes=cls.num_classes,
                        vocab_size=len(vocab))

    @classmethod
    def static_spec(cls, cfg: DatasetConfig) -> DataSpec | None:
        """Fixed only by a given vocabulary file (dataset.vocab); else the vocabulary is built
        from the clients' training texts."""
        return cls._spec_for(cfg, read_vocab(_given_vocab(cfg))) if cfg.vocab else None

    @property
    def spec(self) -> DataSpec:
        if self.vocab is None and self.cfg.vocab:
            self.vocab = read_vocab(_given_vocab(self.cfg))
        if self.vocab is None:
            raise RuntimeError("agnews: the vocabulary is known after `fit` (it is built from "
                               "the clients' training texts) or from dataset.vocab")
        return self._spec_for(self.cfg, self.vocab)

    def check(self) -> None:
        if self.max_len < 1:
            raise ConfigError("dataset.max_len", self.max_len, "must be >= 1 token")
        if self.cfg.vocab and not _given_vocab(self.cfg).is_file():
            raise ConfigError("dataset.vocab", self.cfg.vocab,
                              "no such file; give a vocabulary file (one token per line, "
                              f"starting {PAD}, {UNK}) or null to build one")
        self.data.check()

    def num_samples(self) -> int:
        return self.data.num_rows()

    def fingerprint(self) -> str:
        text = f"{self.data.fingerprint()}|{TOKENIZER_VERSION}|{self.max_len}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _read(self) -> tuple[list[list[str]], np.ndarray]:
        """Every sample's first max_len tokens, and the labels, in pool order."""
        seqs: list[list[str]] = []
        ys = []
        for split in self.data.splits(self.columns):
            texts = split.table.column("text").to_pylist()
            seqs += [tokenize(t or "")[: self.max_len] for t in texts]
            ys.append(read_labels(split.table.column("label"), self.num_classes,
                                  f"{self.name} split {split.name!r}"))
        if not seqs:
            raise DataError(f"{self.name}: no samples in {self.data.hub_id}")
        return seqs, np.concatenate(ys)

    def load(self) -> Pool:
        seqs, y = self._read()
        tokens = sorted({t for seq in seqs for t in seq})
        _POOL_TOKENS.put((self.fingerprint(),), tokens)
        pool_id = {t: i + 1 for i, t in enumerate(tokens)}
        x = np.zeros((len(seqs), self.max_len), dtype=np.int32)
        for row, seq in zip(x, seqs, strict=True):
            row[: len(seq)] = [pool_id[t] for t in seq]
        return Pool(x=x, y=y)

    def _pool_tokens(self) -> list[str]:
        """The sorted pool tokens (pool id i = tokens[i - 1]); re-read if this process did not
        decode the pool."""
        def read() -> list[str]:
            seqs, _ = self._read()
            return sorted({t for seq in seqs for t in seq})

        return _POOL_TOKENS.get((self.fingerprint(),), read)

    def fit(self, x: np.ndarray, train: np.ndarray, folder: Path) -> None:
        """Take the vocabulary from dataset.vocab, else from this split's cache, else build it
        from the training rows `train` and cache it; then the pool id -> vocabulary id table."""
        if self.cfg.vocab:
            self.vocab_file = _given_vocab(self.cfg)
            self.vocab = read_vocab(self.vocab_file)
        elif (folder / VOCAB_FILE).is_file():
            self.vocab_file = folder / VOCAB_FILE
            self.vocab = read_vocab(self.vocab_file)
        else:
            self.vocab_file = folder / VOCAB_FILE
            self.vocab = build_vocab(np.asarray(x[np.sort(train)]), self._pool_tokens())
            write_vocab(self.vocab_file, self.vocab)
            log.info("agnews: vocabulary of %d tokens (from %d training texts) written to %s; "
                     "pass it as dataset.vocab to clients that hold their own data",
                     len(self.vocab), len(train), self.vocab_file)
        self._lookup = torch.from_numpy(self._lookup_table(self.vocab, folder))

    def _lookup_table(self, vocab: list[str], folder: Path) -> np.ndarray:
        """Pool id -> vocabulary id (0 stays 0, tokens outside the vocabulary -> 1), cached per
        vocabulary in the split's folder."""
        digest = hashlib.sha256("\n".join(vocab).encode()).hexdigest()[:16]
        file = folder / f"lookup-{digest}.npy"
        if file.is_file():
            return np.load(file)
        index = {t: i for i, t in enumerate(vocab)}
        table = np.array([0] + [index.get(t, 1) for t in self._pool_tokens()], dtype=np.int64)
        save_array_atomic(file, table)
        return table

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Stored pool ids -> int64 vocabulary ids."""
        if self._lookup is None:
            raise RuntimeError("agnews: call fit before to_input (the vocabulary comes there)")
        if self._lookup.device != x.device:
            self._lookup = self._lookup.to(x.device)
        return self._lookup[x.long()]


DATASETS.register("agnews")(AGNews)
