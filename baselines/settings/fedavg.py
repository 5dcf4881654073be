"""FedAvg's settings: the schema of conf/strategy/fedavg.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass

from flayer.config.schema import MethodSettings


@dataclass
class FedAvgSettings(MethodSettings):
    name: str = "fedavg"
