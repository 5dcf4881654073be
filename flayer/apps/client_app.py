"""The one ClientApp: loads the node's data, restores its personal state, runs the
configured method's client side, stores the state back and replies. Method-agnostic.

The node config says which client a node is (`partition-id`, checked against the run's
`num_clients` when `num-partitions` is given), where its data comes from (a partition of the
run's dataset, or its own folder `data-dir`) and where it keeps a copy of its personal state
(`state-dir`, so that a restarted SuperNode keeps what its client learned)."""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flayer import keys
from flayer.apps.node_state import Personal, load_state, save_state, state_file, state_hash
from flayer.catalog import METHODS
from flayer.compose import config_from_overrides, deployed_overrides
from flayer.config import Config
from flayer.data.federated import ClientData, load_client
from flayer.data.node import load_node_data
from flayer.layers import LayerMap
from flayer.method import ClientEnv, ClientMethod, build_model
from flayer.runtime import pick_device, set_threads, show_info_logs
from flayer.upload import encode

log = logging.getLogger(__name__)


def partition_of(cfg: Config, context: Context) -> int:
    """This node's partition id, checked against the run (a clear error, not a wrong run)."""
    node = context.node_config
    if keys.NODE_PARTITION_ID not in node:
        raise ValueError("the node config lacks partition-id: start the SuperNode with "
                         "--node-config 'partition-id=<k> num-partitions=<N>'")
    partition_id = int(node[keys.NODE_PARTITION_ID])
    if keys.NODE_NUM_PARTITIONS in node and int(node[keys.NODE_NUM_PARTITIONS]) != (
            cfg.num_clients):
        raise ValueError(
            f"node has num-partitions={node[keys.NODE_NUM_PARTITIONS]} but the run has "
            f"num_clients={cfg.num_clients}; give every SuperNode num-partitions="
            f"{cfg.num_clients} or run with num_clients={node[keys.NODE_NUM_PARTITIONS]}"
        )
    if not 0 <= partition_id < cfg.num_clients:
        raise ValueError(f"node has partition-id={partition_id}, outside 0..{cfg.num_clients - 1}"
                         f" (num_clients={cfg.num_clients})")
    return partition_id


def _data_for(cfg: Config, context: Context, partition_id: int, val_fraction: float
              ) -> ClientData:
    data_dir = context.node_config.get(keys.NODE_DATA_DIR)
    if data_dir:
        return load_node_data(cfg, str(data_dir), partition_id, val_fraction)
    return load_client(cfg, partition_id, val_fraction)


def _restore(context: Context, partition_id: int) -> Personal:
    """The personal state from this node's memory, else from its state directory."""
    if keys.STATE_ARRAYS in context.state:
        app = context.state.get(keys.STATE_APP, {})
        return Personal(
            arrays={k: v.numpy() for k, v in context.state[keys.STATE_ARRAYS].items()},
            meta=dict(context.state[keys.STATE_META]) if keys.STATE_META in context.state
            else {},
            version=int(app[keys.STATE_VERSION]) if keys.STATE_VERSION in app else None,
        )
    state_dir = context.node_config.get(keys.NODE_STATE_DIR)
    if not state_dir:
        return Personal()
    file = state_file(str(state_dir), context.run_id, partition_id)
    saved = load_state(file)
    if saved is None:
        return Personal()
    log.info("partition %d: personal state restored from %s", partition_id, file)
    return saved


def _method_for(cfg: Config, context: Context, msg: Message) -> tuple[ClientMethod, Personal]:
    partition_id = partition_of(cfg, context)
    set_threads(int(cfg.backend.client_cpus))
    method = METHODS.get(cfg.strategy.name)
    data = _data_for(cfg, context, partition_id, method.client.holdout_fraction(cfg.strategy))
    model = build_model(cfg, data.source.spec)
    env = ClientEnv(cfg=cfg, settings=cfg.strategy, partition_id=partition_id, data=data,
                    layers=LayerMap(model), device=pick_device(cfg),
                    instructions=dict(msg.content[keys.CONFIG]))
    client = method.client(env, model)
    saved = _restore(context, partition_id)
    if saved.arrays or saved.meta:
        client.load_state(saved.arrays, saved.meta)
    return client, saved


def _store(client: ClientMethod, version: int, context: Context) -> dict[str, np.ndarray]:
    """Keep the personal state in the node's memory and, with a state-dir, on its disk."""
    arrays, meta = client.state()
    context.state[keys.STATE_ARRAYS] = ArrayRecord(
        {k: _to_array(v) for k, v in arrays.items()}
    )
    context.state[keys.STATE_META] = ConfigRecord(meta)
    context.state[keys.STATE_APP] = ConfigRecord({keys.STATE_VERSION: version})
    state_dir = context.node_config.get(keys.NODE_STATE_DIR)
    if state_dir:
        save_state(state_file(str(state_dir), context.run_id, client.env.partition_id),
                   Personal(arrays=arrays, meta=meta, version=version))
    return arrays


def _to_array(value: np.ndarray) -> Array:
    return Array(np.ascontiguousarray(value))


def _sync(client: ClientMethod, saved: Personal, msg: Message
          ) -> tuple[dict[str, np.ndarray], int]:
    """Hand a new global model version to the method once; returns the global arrays and
    the version the client's model is now set up from."""
    global_arrays = {k: v.numpy() for k, v in msg.content[keys.ARRAYS].items()}
    version = int(msg.content[keys.CONFIG][keys.MODEL_VERSION])
    if saved.version != version:
        client.receive(global_arrays, version)
    return global_arrays, version


def handle_train(msg: Message, context: Context, cfg: Config) -> Message:
    client, saved = _method_for(cfg, context, msg)
    global_arrays, version = _sync(client, saved, msg)
    result = client.fit(global_arrays, version)
    _store(client, version, context)
    metrics = MetricRecord({
        keys.PARTITION_ID: client.env.partition_id,
        keys.NUM_EXAMPLES: result.num_examples,
        keys.TRAIN_LOSS: float(result.train_loss),
        **(result.metrics or {}),
    })
    return Message(content=RecordDict({**encode(result.upload), keys.METRICS: metrics}),
                   reply_to=msg)


def handle_evaluate(msg: Message, context: Context, cfg: Config) -> Message:
    client, saved = _method_for(cfg, context, msg)
    _, version = _sync(client, saved, msg)
    metrics: dict[str, int | float] = {keys.PARTITION_ID: client.env.partition_id,
                                       keys.EVALUATED: 0}
    if bool(msg.content[keys.CONFIG][keys.DO_EVALUATE]):
        result, extra = client.evaluate(version)
        metrics.update({
            keys.EVALUATED: 1,
            keys.CORRECT: result.correct,
            keys.NUM_TEST: result.num,
            keys.ACCURACY: result.accuracy,
            keys.AUC: result.auc,
            keys.TEST_LOSS: result.loss_sum / max(result.num, 1),
            **extra,
        })
    arrays = _store(client, version, context)
    if metrics[keys.EVALUATED]:
        # what the client evaluated with: the global version its model was set up from and
        # a fingerprint of everything it keeps, so runs can show that personal state survives
        metrics[keys.INIT_VERSION] = version
        metrics[keys.STATE_HASH] = state_hash(arrays)
    return Message(content=RecordDict({keys.METRICS: MetricRecord(metrics)}), reply_to=msg)


def handle_query(msg: Message, context: Context, cfg: Config) -> Message:
    """Which client this node is: the server asks nodes that joined or came back mid-run."""
    metrics = MetricRecord({keys.PARTITION_ID: partition_of(cfg, context)})
    return Message(content=RecordDict({keys.METRICS: metrics}), reply_to=msg)


def config_of(context: Context) -> Config:
    """Under `flwr run` the run config carries the Hydra overrides as one string."""
    overrides = str(context.run_config.get(keys.RUN_OVERRIDES, ""))
    return config_from_overrides(deployed_overrides(overrides))


def make_client_app(cfg: Config | None = None) -> ClientApp:
    """The ClientApp, bound to a composed config (simulation) or composing its config from
    each run's run config (deployment)."""
    client_app = ClientApp()

    def config(context: Context) -> Config:
        if cfg is not None:
            return cfg
        show_info_logs()  # a ClientApp process of a SuperNode: its log shows flayer's
        return config_of(context)

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        return handle_train(msg, context, config(context))

    @client_app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return handle_evaluate(msg, context, config(context))

    @client_app.query()
    def query(msg: Message, context: Context) -> Message:
        return handle_query(msg, context, config(context))

    return client_app


app = make_client_app()  # for `flwr run` ([tool.flwr.app.components] in pyproject.toml)
