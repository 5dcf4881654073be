"""One client's work for one message, whoever serves it: a SuperNode serving its own client, or
a simulated executor serving a cohort one client after another.

The runner keeps one model object per process and resets it to the run's initial model for
each client (cheaper than building one per client, and the same numbers); the method's client
side then restores what it keeps, takes in the global model (`receive` when the client has not
seen this version, else `reload`), trains or evaluates, and hands back what to keep. A client
kept out of training (`new_clients`) starts from nothing kept, arrives late
(`ClientMethod.arrive`) and is evaluated; it hands back nothing to keep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ConfigRecord, Message, RecordDict
from torch import nn

from flayer.apps.runtime import pick_device
from flayer.config.schema import Config
from flayer.data.federated import ClientData, load_client
from flayer.data.node import load_node_data
from flayer.data.source import DataSpec
from flayer.nn.layers import LayerMap
from flayer.nn.models import build_model
from flayer.nn.training import EvalResult
from flayer.protocol import keys
from flayer.protocol.catalog import METHODS
from flayer.protocol.client import ClientEnv, ClientMethod, FitResult
from flayer.state.personal import Personal, state_hash
from flayer.util.errors import DataError


@dataclass(frozen=True)
class DataOf:
    """Where a client's data comes from: a partition of the run's dataset, or (a SuperNode
    with `data-dir`) the node's own folder."""

    cfg: Config
    data_dir: str | None = None

    def __call__(self, partition_id: int, val_fraction: float) -> ClientData:
        if self.data_dir:
            return load_node_data(self.cfg, self.data_dir, partition_id, val_fraction)
        return load_client(self.cfg, partition_id, val_fraction)


def global_of(msg: Message) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in msg.content[keys.ARRAYS].items()}


def to_array(value: np.ndarray) -> Array:
    return Array(np.ascontiguousarray(value))


def run_error(msg: Message, exc: DataError) -> Message:
    """The reply that stops the run: what the client stands on is damaged, so no client's
    result of this run can be trusted to be the run's (`flayer.protocol.replies.exchange`
    raises it)."""
    log.debug("the run cannot go on: %s", exc)  # the server says so, once
    return Message(content=RecordDict({keys.RUN_ERROR: ConfigRecord({keys.REASON: str(exc)})}),
                   reply_to=msg)



log = logging.getLogger(__name__)

DataFor = Callable[[int, float], ClientData]  # (partition id, holdout fraction) -> data
Metrics = dict[str, int | float]


@dataclass
class Trained:
    result: FitResult
    metrics: Metrics  # the reply's per-client train metrics
    state: Personal  # what the client keeps now


@dataclass
class Evaluated:
    metrics: Metrics  # the reply's per-client metrics (evaluated or only synced)
    state: Personal


class ClientRunner:
    """Serves clients one after another in this process with one reused model."""

    def __init__(self, cfg: Config, data_for: DataFor) -> None:
        self.cfg = cfg
        self.method = METHODS.get(cfg.strategy.name)
        self.data_for = data_for
        self.device = pick_device(cfg)
        self._spec: DataSpec | None = None
        self._model: nn.Module | None = None
        self._layers: LayerMap | None = None
        self._initial: dict[str, torch.Tensor] = {}

    def fresh_model(self, spec: DataSpec) -> tuple[nn.Module, LayerMap]:
        """The run's initial model (built once per process and data spec, then reset)."""
        if self._model is None or spec != self._spec:
            self._model = build_model(self.cfg, spec).to(self.device)
            self._layers = LayerMap(self._model)
            self._initial = {k: v.detach().clone() for k, v in
                             self._model.state_dict().items()}
            self._spec = spec
        else:
            self._model.load_state_dict(self._initial)
            for p in self._model.parameters():
                p.requires_grad_(True)
            self._model.train()
        assert self._layers is not None
        return self._model, self._layers

    def bare_client(self, partition_id: int, instructions: dict[str, Any]) -> ClientMethod:
        """The method's client side on the run's initial model, with nothing restored."""
        data = self.data_for(partition_id,
                             self.method.client.holdout_fraction(self.cfg.strategy))
        model, layers = self.fresh_model(data.source.spec)
        env = ClientEnv(cfg=self.cfg, settings=self.cfg.strategy, partition_id=partition_id,
                        data=data, layers=layers, device=self.device,
                        instructions=instructions)
        return self.method.client(env, model)

    def client(self, partition_id: int, instructions: dict[str, Any], saved: Personal,
               global_arrays: dict[str, np.ndarray], version: int) -> ClientMethod:
        """The method's client side, set up from global model `version`."""
        client = self.bare_client(partition_id, instructions)
        if saved.arrays or saved.meta:
            client.load_state(saved.arrays, saved.meta)
        if saved.version == version:
            client.reload(global_arrays)
        else:
            client.receive(global_arrays, version)
        return client

    def train(self, partition_id: int, instructions: dict[str, Any], saved: Personal,
              global_arrays: dict[str, np.ndarray]) -> Trained:
        version = int(instructions[keys.MODEL_VERSION])
        client = self.client(partition_id, instructions, saved, global_arrays, version)
        result = client.fit(global_arrays, version)
        arrays, meta = client.state()
        metrics: Metrics = {
            keys.PARTITION_ID: partition_id,
            keys.NUM_EXAMPLES: result.num_examples,
            keys.TRAIN_LOSS: float(result.train_loss),
            **(result.metrics or {}),
        }
        return Trained(result, metrics, Personal(arrays=arrays, meta=meta, version=version))

    def evaluate(self, partition_id: int, instructions: dict[str, Any], saved: Personal,
                 global_arrays: dict[str, np.ndarray], do_evaluate: bool) -> Evaluated:
        """Take in the global model and, if asked, evaluate the personalized model."""
        version = int(instructions[keys.MODEL_VERSION])
        client = self.client(partition_id, instructions, saved, global_arrays, version)
        metrics: Metrics = {keys.PARTITION_ID: partition_id, keys.EVALUATED: 0}
        if do_evaluate:
            metrics.update(evaluated(*client.evaluate(version)))
        arrays, meta = client.state()
        if do_evaluate:
            # what the client evaluated with: the global version its model was set up from
            # and a fingerprint of everything it keeps, so runs can show that state survives
            metrics[keys.INIT_VERSION] = version
            metrics[keys.STATE_HASH] = state_hash(arrays)
        return Evaluated(metrics, Personal(arrays=arrays, meta=meta, version=version))

    def arrive(self, partition_id: int, instructions: dict[str, Any],
               global_arrays: dict[str, np.ndarray]) -> Metrics:
        """A new client (never trained): from nothing kept, it arrives late with the global
        model and is evaluated; the reply's metrics, and nothing to keep."""
        version = int(instructions[keys.MODEL_VERSION])
        client = self.bare_client(partition_id, instructions)
        metrics: Metrics = {keys.PARTITION_ID: partition_id,
                            **evaluated(*client.arrive(global_arrays, version,
                                                       self.cfg.new_client_epochs))}
        arrays, _ = client.state()  # what it evaluated with, dropped
        metrics[keys.INIT_VERSION] = version
        metrics[keys.STATE_HASH] = state_hash(arrays)
        return metrics


def evaluated(result: EvalResult, extra: dict[str, float]) -> Metrics:
    """The reply's metrics of a client's evaluation."""
    return {
        keys.EVALUATED: 1,
        keys.CORRECT: result.correct,
        keys.NUM_TEST: result.num,
        keys.ACCURACY: result.accuracy,
        keys.AUC: result.auc,
        keys.TEST_LOSS: result.loss_sum / max(result.num, 1),
        **extra,
    }


_RUNNER: list[ClientRunner] = []  # this process's runner (one run at a time per process)


def runner_for(cfg: Config, data_for: DataFor) -> ClientRunner:
    """This process's runner for the run (kept across messages: Flower hands each message a
    fresh copy of the app, so it cannot live in the app)."""
    if not _RUNNER or _RUNNER[0].cfg != cfg or _RUNNER[0].data_for != data_for:
        _RUNNER[:] = [ClientRunner(cfg, data_for)]
    return _RUNNER[0]
