"""The one local training loop and the one evaluation loop every method uses."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from flayer.data.federated import ClientData


class Terms(NamedTuple):
    """A loss made of named terms (e.g. cross-entropy and a regularizer): training minimizes
    `total` and also reports each term's sample-weighted mean."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


# (model, inputs, labels) -> loss or Terms; the default is cross-entropy of model(inputs)
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], "torch.Tensor | Terms"]
# (epoch, batch index) -> None; runs after backward, before the optimizer step
BeforeStep = Callable[[int, int], None]
# (model, inputs) -> logits; the default is model(inputs)
Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Index batches over n samples, shuffled when a generator is given. A trailing batch of
    one sample joins the previous batch (BatchNorm cannot train on a single sample)."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else n
        yield order[start:end]


@contextmanager
def only_trainable(model: nn.Module, names: Collection[str]) -> Iterator[dict[str, nn.Parameter]]:
    """Freeze every parameter but `names` (no gradient at all, so a frozen one cannot move,
    whatever the optimizer), yield the trainable ones by name in the model's order, and give
    every parameter back the `requires_grad` it had, also when training fails."""
    params = dict(model.named_parameters())
    unknown = set(names) - set(params)
    if unknown:
        raise KeyError(f"no parameters {sorted(unknown)} in {type(model).__name__}")
    was = {n: p.requires_grad for n, p in params.items()}
    for n, p in params.items():
        p.requires_grad_(n in names)
    try:
        yield {n: p for n, p in params.items() if n in names}
    finally:
        for n, p in params.items():
            p.requires_grad_(was[n])


def proximal_pull(model: nn.Module, anchor: Mapping[str, np.ndarray], weight: float,
                  device: torch.device) -> BeforeStep:
    """A `before_step` hook adding weight * (w - anchor) to every parameter's gradient: the
    gradient of (weight / 2) * ||w - anchor||^2, added without a second backward pass (a
    parameter without a gradient gets the pull alone). FedProx's and Ditto's local term."""
    fixed = {n: torch.as_tensor(anchor[n], device=device) for n, _ in model.named_parameters()}
    params = list(model.named_parameters())

    def hook(epoch: int, batch: int) -> None:
        with torch.no_grad():
            for name, p in params:
                pull = p.detach() - fixed[name]
                if p.grad is None:
                    p.grad = weight * pull
                else:
                    p.grad.add_(pull, alpha=weight)

    return hook


@dataclass
class TrainStats:
    loss_sum: float = 0.0
    samples: int = 0
    term_sums: dict[str, float] = field(default_factory=dict)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.samples if self.samples else float("nan")

    def mean_terms(self) -> dict[str, float]:
        """Each named term's mean over the trained samples."""
        n = self.samples
        return {k: v / n if n else float("nan") for k, v in self.term_sums.items()}


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ClientData,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    loss_fn: LossFn = cross_entropy,
    before_step: BeforeStep | None = None,
) -> TrainStats:
    """Mini-batch training on the client's training data; returns the sample-weighted loss."""
    model.train()
    stats = TrainStats()
    for epoch in range(epochs):
        for b, idx in enumerate(batches(data.num_train, batch_size, generator)):
            x = data.to_input(data.x_train[idx]).to(device, non_blocking=True)
            y = data.y_train[idx].to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            out = loss_fn(model, x, y)
            loss, terms = (out.total, out.terms) if isinstance(out, Terms) else (out, {})
            loss.backward()
            if before_step is not None:
                before_step(epoch, b)
            optimizer.step()
            stats.loss_sum += float(loss.detach()) * len(idx)
            stats.samples += len(idx)
            for name, term in terms.items():
                stats.term_sums[name] = (stats.term_sums.get(name, 0.0)
                                         + float(term.detach()) * len(idx))
    return stats


@dataclass(frozen=True)
class EvalResult:
    correct: int
    num: int
    loss_sum: float
    auc: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.num if self.num else float("nan")


def micro_auc(y: np.ndarray, prob: np.ndarray, num_classes: int) -> float:
    """PFLlib's AUC: micro-averaged one-vs-rest ROC AUC over the binarized labels (what
    scikit-learn's `roc_auc_score(label_binarize(y), prob, average="micro")` gives), computed
    from average ranks (the Mann-Whitney statistic, ties counted half): the same number at a
    small share of the cost, which matters when thousands of clients evaluate in a round.
    NaN where the flattened labels hold one class only."""
    truth = np.zeros((len(y), num_classes), dtype=bool)
    truth[np.arange(len(y)), np.asarray(y, dtype=np.int64)] = True
    truth, scores = truth.ravel(), np.asarray(prob, dtype=np.float64).ravel()
    pos = int(truth.sum())
    neg = truth.size - pos
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks of tied scores
    return float((ranks[truth].sum() - pos * (pos + 1) / 2) / (pos * neg))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    data: ClientData,
    *,
    device: torch.device,
    batch_size: int = 512,
    forward: Forward | None = None,
) -> EvalResult:
    """Accuracy, loss and AUC of model on (x, y), in bounded batches."""
    model.eval()
    correct, loss_sum, probs = 0, 0.0, []
    for idx in batches(len(y), batch_size, None):
        xb = data.to_input(x[idx]).to(device)
        yb = y[idx].to(device)
        logits = forward(model, xb) if forward is not None else model(xb)
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
        probs.append(F.softmax(logits.float(), dim=1).cpu().numpy())
    if not probs:
        return EvalResult(0, 0, 0.0, float("nan"))
    auc = micro_auc(y.numpy(), np.concatenate(probs), data.num_classes)
    return EvalResult(correct=correct, num=len(y), loss_sum=loss_sum, auc=auc)
