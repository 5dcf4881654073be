"""pFedMe's settings: the schema of conf/strategy/pfedme.yaml and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class PFedMeSettings(MethodSettings):
    name: str = "pfedme"
    K: int = 5  # the paper's and PFLlib's name
    p_learning_rate: float = 0.01
    lamda: float = 15.0
    beta: float = 1.0

    def check(self, cfg: Config, layers: LayerMap) -> None:
        self.require(self.K >= 1, "K", self.K, "must be an integer >= 1")
        self.require_number("p_learning_rate", "> 0")
        self.require_number("lamda", "> 0")
        self.require_number("beta", "> 0", note="1 = the plain mean")
        self.require(self.p_learning_rate * self.lamda < 2, "p_learning_rate",
                     self.p_learning_rate, f"p_learning_rate * lamda (lamda={self.lamda}) "
                     "must be < 2, else the proximal step on theta diverges")
        self.require(cfg.learning_rate * self.lamda < 2, "lamda", self.lamda,
                     f"lr * lamda (lr={cfg.learning_rate}) must be < 2, else w's step toward "
                     "theta diverges")
