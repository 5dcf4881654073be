"""What one round produced: the record the server fills in and the results writers read."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ClientEval:
    """One client's evaluation of its own inference model on its own test data."""

    partition_id: int
    correct: int
    num_test: int
    auc: float
    loss: float
    extra: dict[str, float] = field(default_factory=dict)  # the method's own metrics

    @property
    def accuracy(self) -> float:
        return self.correct / self.num_test if self.num_test else float("nan")


@dataclass
class RoundRecord:
    """What happened in one round (round 0: the evaluation before any training)."""

    round: int
    model_version: int
    sampled: list[int] = field(default_factory=list)  # partitions asked to train
    clients: list[ClientEval] = field(default_factory=list)  # empty: no evaluation
    # the clients kept out of training (`new_clients`), evaluated as clients arriving late
    new_clients: list[ClientEval] = field(default_factory=list)
    train_loss: float | None = None
    train_metrics: dict[str, float] = field(default_factory=dict)  # the method's extra ones
    trained: int = 0
    upload_bytes: int = 0
    failures: int = 0
    seconds: float = 0.0
