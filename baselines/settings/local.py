"""Local training's settings: the schema of conf/strategy/local.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass

from flayer.config.schema import MethodSettings


@dataclass
class LocalSettings(MethodSettings):
    name: str = "local"
