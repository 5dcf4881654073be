"""Test helpers: configs composed like run.py does, and small datasets in the real formats."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Error, Message, MessageType, Metadata, RecordDict
from torch import nn

from flayer.config.compose import compose_dict
from flayer.config.schema import Config, DatasetConfig, to_config
from flayer.data.federated import ClientData
from flayer.data.fetch_fmnist import write_idx
from flayer.data.source import DataSpec
from flayer.data.sources.fmnist import FILES, FashionMNIST, read_idx
from flayer.nn.layers import LayerMap
from flayer.nn.models import MODELS
from flayer.protocol.aggregation import Contribution
from flayer.protocol.client import ClientEnv, ClientMethod
from flayer.protocol.rounds import RoundLoop
from flayer.protocol.server import MethodServer
from flayer.protocol.upload import Upload, UploadSpec, decode, encode, reply_nbytes
from flayer.util.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FMNIST_SPEC = FashionMNIST.spec


def make_config(*overrides: str) -> Config:
    """A typed config composed from conf/ with Hydra, as run.py composes it."""
    return to_config(compose_dict(overrides))


def small_data_tuning(overrides: tuple[str, ...] | list[str]) -> list[str]:
    """Settings for the tests' small data that depend on the chosen options: FLAYER's rate
    multiplier for the CNN (20, tuned on the real data at lr 0.005) is too steep there at lr
    0.01 (4 instead), and a Dirichlet split uses alpha 1 (every client gets every class)."""
    def chosen(group: str, default: str) -> str:
        picks = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{group}=")]
        return picks[-1] if picks else default

    return ([*(["strategy.c=4"] if chosen("strategy", "flayer") == "flayer" else []),
             *(["partition.alpha=1.0"] if chosen("partition", "dirichlet") == "dirichlet"
               else [])])


def write_fake_fmnist(folder: Path, n_train: int = 600, n_test: int = 100, seed: int = 0,
                      gz: bool = True) -> Path:
    """Learnable Fashion-MNIST look-alike in IDX: each class a bright 8x8 block at its own
    place (a shape a CNN picks up in a few steps), plus noise."""
    rng = np.random.default_rng(seed)
    patterns = np.zeros((10, 28, 28))
    for c in range(10):
        r, q = divmod(c, 4)
        patterns[c, 2 + 8 * r : 10 + 8 * r, 1 + 7 * q : 9 + 7 * q] = 220
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 10
        rng.shuffle(y)
        noise = rng.normal(0, 40, size=(n, 28, 28))
        x = np.clip(patterns[y] + noise, 0, 255).astype(np.uint8)
        kx, ky = f"{split}_x", f"{split}_y"
        suffix = ".gz" if gz else ""
        if gz:
            write_idx(folder / (FILES[kx] + suffix), x)
            write_idx(folder / (FILES[ky] + suffix), y.astype(np.uint8))
        else:
            for key, arr in ((kx, x), (ky, y.astype(np.uint8))):
                header = bytes([0, 0, 8, arr.ndim]) + b"".join(
                    int(d).to_bytes(4, "big") for d in arr.shape)
                (folder / FILES[key]).write_bytes(header + arr.tobytes())
    return folder


def real_fmnist() -> Path | None:
    """The real Fashion-MNIST's folder, found as a run finds it (the data source's own default
    locations: Debian's package, then fetch_fmnist's cache), or None when none holds it."""
    source = FashionMNIST(DatasetConfig(name="fmnist"))
    try:
        source.check()
    except DataError:
        return None
    return Path(os.path.expanduser(source.path))


def require_real_fmnist() -> Path:
    """The real data, or a failed test: a test that checks learning must never skip silently,
    or a machine without the data would pass without checking it."""
    found = real_fmnist()
    if found is None:
        places = ", ".join(FashionMNIST.locations)
        pytest.fail(f"the real Fashion-MNIST is in none of {places}; install it with "
                    "`apt-get install -y dataset-fashion-mnist` (or run "
                    "`python -m flayer.data.fetch_fmnist`)", pytrace=False)
    return found


def write_real_subset(folder: Path, n_train: int, n_test: int) -> Path:
    """The first samples of the real Fashion-MNIST (wherever it is found, gzipped or not),
    written back as IDX files; fails the test when the data is missing."""
    real = require_real_fmnist()
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        for kind in ("x", "y"):
            key = f"{split}_{kind}"
            stored = [real / name for name in (FILES[key] + ".gz", FILES[key])]
            data = read_idx(next(f for f in stored if f.is_file()))[:n]
            write_idx(folder / (FILES[key] + ".gz"), data)
    return folder


def tiny_client_data(n_train: int = 40, n_test: int = 20, seed: int = 0) -> ClientData:
    """In-memory client data in the stored (uint8) form."""
    g = torch.Generator().manual_seed(seed)
    return ClientData(
        x_train=torch.randint(0, 256, (n_train, 1, 28, 28), generator=g, dtype=torch.uint8),
        y_train=torch.randint(0, 10, (n_train,), generator=g),
        x_test=torch.randint(0, 256, (n_test, 1, 28, 28), generator=g, dtype=torch.uint8),
        y_test=torch.randint(0, 10, (n_test,), generator=g),
        x_val=torch.zeros((0, 1, 28, 28), dtype=torch.uint8),
        y_val=torch.zeros((0,), dtype=torch.int64),
        source=FashionMNIST(DatasetConfig(name="fmnist")),
    )


def client_env(cfg: Config, model: nn.Module, data: ClientData | None = None,
               instructions: dict | None = None) -> ClientEnv:
    """A client's environment on the CPU, with tiny in-memory data unless given."""
    return ClientEnv(cfg=cfg, settings=cfg.strategy, partition_id=0,
                     data=data if data is not None else tiny_client_data(),
                     layers=LayerMap(model), device=torch.device("cpu"),
                     instructions=instructions or {})


def make_client(cls: type[ClientMethod], cfg: Config, model: nn.Module | None = None,
                **env: object) -> ClientMethod:
    """A method's client on tiny data; the run's CNN unless a model is given."""
    from flayer.nn.models import build_model

    model = model if model is not None else build_model(cfg, FMNIST_SPEC)
    return cls(client_env(cfg, model, **env), model)


class TinyBN(nn.Module):
    """A small model with BatchNorm, to check that running statistics stay local."""

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        input_shape, num_classes = spec.input_shape, spec.num_classes
        self.body = nn.Sequential(nn.Conv2d(input_shape[0], 4, 3, stride=2), nn.BatchNorm2d(4),
                                  nn.ReLU(), nn.Flatten())
        flat = 4 * ((input_shape[1] - 3) // 2 + 1) * ((input_shape[2] - 3) // 2 + 1)
        self.fc = nn.Linear(flat, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


# Registered like any model (the public way to add one), so configs can name it; it has no
# conf/model yaml, being the tests' own.
TEST_MODELS = ("tiny_bn",)
MODELS.register("tiny_bn")(TinyBN)


def loop_for(cfg: Config, model: nn.Module, routing=None) -> RoundLoop:
    """The configured method's round loop holding `model` as its first global model; its
    messages stamped as the in-process engine stamps them."""
    from flayer.apps.inprocess import new_message
    from flayer.protocol.catalog import METHODS

    method = METHODS.get(cfg.strategy.name)
    loop = RoundLoop(cfg, method.build_server(cfg, LayerMap(model)),
                     train_metrics=method.client.train_metrics, routing=routing,
                     new_message=new_message)
    loop.set_initial(model)
    return loop


def server_for(cfg: Config, layers: LayerMap) -> MethodServer:
    """The configured method's server side for a model of these layers."""
    from flayer.protocol.catalog import METHODS

    return METHODS.get(cfg.strategy.name).build_server(cfg, layers)


def accepted(upload: Upload, spec: UploadSpec, weight: float) -> tuple[Contribution, int]:
    """What the server takes in of this upload (ReplyError otherwise), and the bytes the
    client's own reply holds."""
    content = RecordDict(encode(upload))
    return decode(content, spec, weight), reply_nbytes(content)


def mock_reply(node: int, content: RecordDict | None = None, error: str | None = None,
               message_type: str = MessageType.TRAIN) -> Message:
    """A reply as the server receives it from node (or an error reply)."""
    meta = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                    reply_to_message_id="x", group_id="1", created_at=time.time(), ttl=60.0,
                    message_type=message_type)
    if error is not None:
        return Message(error=Error(code=1, reason=error), metadata=meta)
    return Message(content=content, metadata=meta)


class TinyLinear(nn.Module):
    """Softmax regression on the flattened image (seeded): gradients by hand are easy."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class TinyOutHead(nn.Module):
    """A body with BatchNorm and a Linear head named `out` (no CNN names anywhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16),
                                  nn.ReLU())
        self.out = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))
