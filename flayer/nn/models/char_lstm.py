"""LEAF's Shakespeare model (models/shakespeare/stacked_lstm.py; the FedAvg paper's character
LSTM): embedding(V, 8) -> LSTM(256) -> LSTM(256) -> Linear(256, C) on the last position's
output, predicting the character after the window.

Input: int64 character ids, batch x T (every id a character: no padding). PyTorch's default
initialization (LEAF's TensorFlow cells start from Glorot weights and a forget bias of 1).

Layers (flayer.nn.layers: a layer is a top-level child that owns parameters): `embedding`,
`lstm1`, `lstm2`, `fc`, so L = 4 and J = 11 tensors (embedding.weight; per LSTM weight_ih,
weight_hh, bias_ih, bias_hh; fc.weight, fc.bias). The two LSTM layers are two single-layer
nn.LSTMs rather than one nn.LSTM(num_layers=2) (the same computation): FLAYER's notion is
depth, and the two recurrent layers are two depths, so each gets its own adaptive rate
(l = 1 and 2 of s = 3) and counts as its own layer in every per-layer setting, where one
2-layer module would give both one rate, averaged over all eight tensors. The head is `fc`,
one Linear after the body, as FedPer, FedRep, FedBABU, FedRoD, FedCP, FedDBE, FedProto, GPFL
and LG-FedAvg need; the feature (the head's input) is lstm2's 256-wide last output.

FLAYER's masked upload (flayer.algorithm.masking) withholds elements of 4-D (kernels) and 1-D
tensors only: here the embedding, the four LSTM weight matrices (2-D) and the head go in full,
and only the four LSTM bias vectors (j = 3, 4, 7, 8; 4 x 256 gate biases each) are masked, each
as one group, withholding the fraction m_j = 1 - j/11 of its least-changed elements. They hold
4,096 of the model's 819,920 parameters (0.5%; the recurrent 1024 x 256 weights hold most), so
FLAYER withholds about 0.25% of this model: its upload is almost FedAvg's. That is not what the
paper's idea asks for: it withholds a share of every shallow layer's least-changed parameters,
more the shallower the layer, so the recurrent and input weights would be masked too (e.g. the
1-D rule applied to each gate unit's row, as for 1x1 convolutions). Masking 2-D weights would
change FLAYER's rule for every model; it is not made here, so results on this model measure
FLAYER with its upload close to FedAvg's.
"""

from __future__ import annotations

import torch
from torch import nn

from flayer.data.source import DataSpec
from flayer.nn.models import MODELS, require_tokens

EMBED_DIM = 8  # LEAF's and the FedAvg paper's character embedding
HIDDEN = 256  # units of each LSTM layer


class CharLSTM(nn.Module):
    """Character embedding, two stacked LSTM layers, a linear classifier on the last step."""

    def __init__(self, vocab_size: int, num_classes: int, embed: int = EMBED_DIM,
                 hidden: int = HIDDEN) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed)
        self.lstm1 = nn.LSTM(embed, hidden, batch_first=True)
        self.lstm2 = nn.LSTM(hidden, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm1(self.embedding(x))
        h, _ = self.lstm2(h)
        return self.fc(h[:, -1])


@MODELS.register("char_lstm")
def build_char_lstm(spec: DataSpec) -> nn.Module:
    require_tokens(spec, "char_lstm")
    assert spec.vocab_size is not None
    return CharLSTM(spec.vocab_size, spec.num_classes)
