"""LEAF's 80-character vocabulary for Shakespeare's next-character task, and text <-> ids.

One place for both Shakespeare sources (the plays' texts and the hub's windows), so that the
same text gives the same ids whichever of them reads it. A character's id is its position in
VOCAB (LEAF's models/utils/language_utils.py ALL_LETTERS).
"""

from __future__ import annotations

import re

import numpy as np

VOCAB = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
OUTSIDE = re.compile(f"[^{re.escape(VOCAB)}]")  # a character LEAF's vocabulary lacks
SPACE = VOCAB.index(" ")

_CODES = np.full(128, 255, dtype=np.uint8)  # ASCII code -> id (255: outside the vocabulary)
_CODES[[ord(c) for c in VOCAB]] = np.arange(len(VOCAB), dtype=np.uint8)


def encode(text: str) -> np.ndarray:
    """Characters of LEAF's vocabulary -> their uint8 ids (the text holds only those)."""
    return _CODES[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]


def encode_codes(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Unicode code points (any shape) -> uint8 ids, a character outside the vocabulary as a
    space; and how many were outside. For text whose length is fixed (the hub's 80-character
    windows), where an outside character cannot be dropped as the plays' source drops it."""
    ids = _CODES[np.minimum(codes, 127)]  # 127 (DEL) is outside too
    outside = ids == 255
    ids[outside] = SPACE
    return ids, int(outside.sum())
