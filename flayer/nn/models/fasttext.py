"""fastText as in PFLlib (the FLAYER reference's text model): embedding(V, 32) -> mean over
tokens -> Linear(32, 32) -> Linear(32, C).

Input: int64 token ids, batch x T, id 0 = padding. As in the reference, the mean runs over
all T positions, padding included: the padding row of the embedding is zero and gets no
gradient, so padding adds nothing to the sum but counts in the divisor (short texts give
smaller features). There is no nonlinearity between fc1 and fc, as in the reference. The
reference returns log-softmax; we return the logits, which give the same cross-entropy, the
same predictions and the same softmax probabilities.

Top-level children: embedding, fc1, fc, so L = 3 and J = 5. The head is fc, the feature (the
head's input) is fc1's 32-wide output.
"""

from __future__ import annotations

import torch
from torch import nn

from flayer.data.source import DataSpec
from flayer.nn.models import MODELS, require_tokens

EMBED_DIM = 32  # the reference's hidden_dim / emb_dim for text
PADDING_ID = 0


class FastText(nn.Module):
    """Bag of embeddings, one hidden linear map, a linear classifier."""

    def __init__(self, vocab_size: int, num_classes: int, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=PADDING_ID)
        self.fc1 = nn.Linear(dim, dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc1(self.embedding(x).mean(dim=1)))


@MODELS.register("fasttext")
def build_fasttext(spec: DataSpec) -> nn.Module:
    require_tokens(spec, "fasttext")
    assert spec.vocab_size is not None
    return FastText(spec.vocab_size, spec.num_classes)
