"""Adding a method is what the docs' "Extending" page says: its two modules, its yaml and its
test, and nothing else. A copy of the project gets a new method (FedAvg whose server moves
only part of the way to the clients' mean) and, with no other file touched, the project's own
tests that cover every method pass with it: its settings are composed and checked, it runs
whole rounds through the real apps, and its own test runs."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # a copy of the project and a test run inside it

SETTINGS = '''
"""Half-step FedAvg's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flayer.config.schema import Config, MethodSettings

if TYPE_CHECKING:
    from flayer.nn.layers import LayerMap


@dataclass
class HalfStepSettings(MethodSettings):
    name: str = "halfstep"
    step: float = 0.5

    def check(self, cfg: Config, layers: LayerMap) -> None:
        self.require(0 < self.step <= 1, "step", self.step, "must be in (0, 1]")
'''

METHOD = '''
"""Half-step FedAvg: the server moves the global model `step` of the way to the clients'
sample-weighted mean."""

from __future__ import annotations

import numpy as np

from baselines.settings.halfstep import HalfStepSettings
from flayer.protocol.aggregation import WeightedSum
from flayer.protocol.client import ClientMethod
from flayer.protocol.method import register_method
from flayer.protocol.server import MethodServer


class HalfStepClient(ClientMethod):
    def kept(self) -> set[str]:
        return self.buffers()


class HalfStepServer(MethodServer):
    settings: HalfStepSettings

    def aggregate_sums(self, total: WeightedSum, previous: dict[str, np.ndarray]
                       ) -> dict[str, np.ndarray]:
        mean = total.mean(previous)
        step = self.settings.step
        return {k: (previous[k] + step * (mean[k] - previous[k])).astype(previous[k].dtype)
                for k in previous}


register_method("halfstep", HalfStepSettings, HalfStepClient, HalfStepServer)
'''

YAML = '''# Half-step FedAvg (the extending example)
defaults:
  - /strategy_halfstep_schema
  - _self_

step: 0.5
'''

TEST = '''
"""Half-step FedAvg: the server's step, and whole rounds through the apps."""

import numpy as np

from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.protocol.aggregation import Contribution, WeightedSum
from tests.helpers import FMNIST_SPEC, make_config, server_for
from tests.localgrid import run_local

BAD_SETTINGS = {"halfstep": ["strategy.step=0", "strategy.step=1.5"]}


def test_the_server_moves_the_given_share_of_the_way():
    cfg = make_config("strategy=halfstep", "strategy.step=0.25")
    model = build_model(cfg, FMNIST_SPEC)
    server = server_for(cfg, LayerMap(model))
    previous = {k: np.zeros_like(v) for k, v in server.initial_global(model).items()}
    total = WeightedSum.of([Contribution(1.0, {k: np.full_like(v, 4.0)
                                               for k, v in previous.items()})])
    out = server.aggregate_sums(total, previous)
    assert all(np.allclose(v, 1.0) for v in out.values())


def test_it_learns_through_the_apps(small):
    _, records, _ = run_local(small("strategy=halfstep"))
    last = records[-1]
    assert sum(c.correct for c in last.clients) / sum(c.num_test for c in last.clients) > 0.2
'''

ADDED = {
    "baselines/settings/halfstep.py": SETTINGS,
    "baselines/halfstep.py": METHOD,
    "conf/strategy/halfstep.yaml": YAML,
    "tests/methods/test_halfstep.py": TEST,
}


def test_a_method_is_its_modules_its_yaml_and_its_test(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(
        ".git", ".venv", "outputs", "multirun", "site", "docs", "__pycache__", "*.egg-info"))
    for name, text in ADDED.items():
        (project / name).write_text(text.lstrip())
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
         "tests/methods/test_halfstep.py", "tests/unit/test_settings.py",
         "tests/unit/test_registry.py", "tests/methods/test_methods_local.py",
         "-k", "halfstep"],
        cwd=project, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    passed = int(out.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed >= 6, out.stdout[-1500:]  # its own tests and the generic ones, with it
