"""The one ClientApp: loads the node's partition, restores its personal state, runs the
configured method's client side, stores the state back and replies. Method-agnostic."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flayer import keys
from flayer.catalog import METHODS
from flayer.compose import config_from_overrides
from flayer.config import Config
from flayer.data.federated import load_client
from flayer.layers import LayerMap
from flayer.method import ClientEnv, ClientMethod, build_model
from flayer.runtime import pick_device, set_threads
from flayer.upload import encode


def _method_for(cfg: Config, context: Context, msg: Message) -> ClientMethod:
    partition_id = int(context.node_config[keys.NODE_PARTITION_ID])
    num_partitions = int(context.node_config.get(keys.NODE_NUM_PARTITIONS, cfg.num_clients))
    if num_partitions != cfg.num_clients:
        raise ValueError(
            f"node has num-partitions={num_partitions} but the run has "
            f"num_clients={cfg.num_clients}"
        )
    set_threads(int(cfg.backend.client_cpus))
    method = METHODS.get(cfg.strategy.name)
    data = load_client(cfg, partition_id, method.client.holdout_fraction(cfg.strategy))
    model = build_model(cfg, data.source.spec)
    env = ClientEnv(cfg=cfg, settings=cfg.strategy, partition_id=partition_id, data=data,
                    layers=LayerMap(model), device=pick_device(cfg),
                    instructions=dict(msg.content[keys.CONFIG]))
    client = method.client(env, model)
    if keys.STATE_ARRAYS in context.state:
        arrays = {k: v.numpy() for k, v in context.state[keys.STATE_ARRAYS].items()}
        meta = dict(context.state[keys.STATE_META]) if keys.STATE_META in context.state else {}
        client.load_state(arrays, meta)
    return client


def _store(client: ClientMethod, context: Context) -> None:
    arrays, meta = client.state()
    context.state[keys.STATE_ARRAYS] = ArrayRecord(
        {k: _to_array(v) for k, v in arrays.items()}
    )
    context.state[keys.STATE_META] = ConfigRecord(meta)


def _to_array(value: np.ndarray) -> Array:
    return Array(np.ascontiguousarray(value))


def _sync(client: ClientMethod, msg: Message) -> tuple[dict[str, np.ndarray], int]:
    """Hand a new global model version to the method once."""
    global_arrays = {k: v.numpy() for k, v in msg.content[keys.ARRAYS].items()}
    version = int(msg.content[keys.CONFIG][keys.MODEL_VERSION])
    if client.meta.get("version") != version:
        client.receive(global_arrays, version)
        client.meta["version"] = version
    return global_arrays, version


def handle_train(msg: Message, context: Context, cfg: Config) -> Message:
    client = _method_for(cfg, context, msg)
    global_arrays, version = _sync(client, msg)
    result = client.fit(global_arrays, version)
    _store(client, context)
    metrics = MetricRecord({
        keys.PARTITION_ID: client.env.partition_id,
        keys.NUM_EXAMPLES: result.num_examples,
        keys.TRAIN_LOSS: float(result.train_loss),
        **(result.metrics or {}),
    })
    return Message(content=RecordDict({**encode(result.upload), keys.METRICS: metrics}),
                   reply_to=msg)


def handle_evaluate(msg: Message, context: Context, cfg: Config) -> Message:
    client = _method_for(cfg, context, msg)
    _sync(client, msg)
    metrics: dict[str, int | float] = {keys.PARTITION_ID: client.env.partition_id,
                                       keys.EVALUATED: 0}
    if bool(msg.content[keys.CONFIG][keys.DO_EVALUATE]):
        result, extra = client.evaluate()
        metrics.update({
            keys.EVALUATED: 1,
            keys.CORRECT: result.correct,
            keys.NUM_TEST: result.num,
            keys.ACCURACY: result.accuracy,
            keys.AUC: result.auc,
            keys.TEST_LOSS: result.loss_sum / max(result.num, 1),
            **extra,
        })
    _store(client, context)
    return Message(content=RecordDict({keys.METRICS: MetricRecord(metrics)}), reply_to=msg)


def config_of(context: Context) -> Config:
    """Under `flwr run` the run config carries the Hydra overrides as one string."""
    return config_from_overrides(str(context.run_config.get(keys.RUN_OVERRIDES, "")))


def make_client_app(cfg: Config | None = None) -> ClientApp:
    """The ClientApp, bound to a composed config (simulation) or composing its config from
    each run's run config (deployment)."""
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        return handle_train(msg, context, cfg or config_of(context))

    @client_app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return handle_evaluate(msg, context, cfg or config_of(context))

    return client_app


app = make_client_app()  # for `flwr run` ([tool.flwr.app.components] in pyproject.toml)
