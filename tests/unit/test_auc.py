"""The evaluation's AUC is scikit-learn's micro-averaged one-vs-rest ROC AUC (PFLlib's), ties
included, computed from ranks."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import label_binarize

from flayer.nn.training import micro_auc


def reference(y, prob, classes):
    y_bin = np.eye(2)[y] if classes == 2 else label_binarize(y, classes=np.arange(classes))
    return roc_auc_score(y_bin, prob, average="micro")


@pytest.mark.parametrize("classes", [2, 3, 10])
@pytest.mark.parametrize("n", [1, 2, 7, 200])
def test_equals_scikit_learn(classes, n):
    rng = np.random.default_rng(classes * 1000 + n)
    for _ in range(20):
        y = rng.integers(0, classes, size=n)
        logits = rng.normal(size=(n, classes))
        if rng.random() < 0.5:  # coarse scores: many ties
            logits = np.round(logits)
        prob = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
        assert micro_auc(y, prob, classes) == pytest.approx(reference(y, prob, classes),
                                                            abs=1e-12)


def test_perfect_and_reversed_scores():
    y = np.array([0, 1, 2])
    assert micro_auc(y, np.eye(3), 3) == 1.0
    assert micro_auc(y, 1 - np.eye(3), 3) == 0.0
    assert micro_auc(np.array([0, 1]), np.full((2, 2), 0.5), 2) == 0.5  # all tied
