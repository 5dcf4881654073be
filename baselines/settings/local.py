"""Local training's settings: the schema of conf/strategy/local.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass

from flayer.config.schema import StrategyConfig


@dataclass
class LocalConfig(StrategyConfig):
    name: str = "local"
