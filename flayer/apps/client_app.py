"""The one ClientApp, method-agnostic, in its two roles.

- **A SuperNode** (`flwr run` on real machines) is one client. Its node config says which
  (`partition-id`, checked against the run's `num_clients` when `num-partitions` is given),
  where its data comes from (a partition of the run's dataset, or its own folder `data-dir`)
  and where it keeps copies of its personal state (`state-dir`, per run folder). It keeps
  that state in its memory between messages and replies with its own upload.
- **A simulated executor** serves any client: each message names a cohort, the executor
  serves its clients one after another with one reused model, reads and writes their state in
  the run's client state store, and replies with the weighted sum of their uploads (each
  checked against the method's declaration first) and one metrics record per client.

Either way a reply holds one record per client (`keys.client_record`), or a failure record
(`keys.failed_record`) for a client whose work failed. A client's failure is its computation
failing; what the run stands on failing (a damaged client state file, or in simulation the
run's data) is the run's: the reply is then one `keys.RUN_ERROR` record, and the run stops.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flayer.apps.client_work import ClientRunner, runner_for
from flayer.apps.runtime import set_threads, show_info_logs
from flayer.config.compose import config_from_overrides, deployed_overrides
from flayer.config.schema import Config
from flayer.data.federated import ClientData, load_client
from flayer.data.node import load_node_data
from flayer.protocol import keys
from flayer.protocol.aggregation import WeightedSum
from flayer.protocol.upload import ReplyError, checked, encode, spec_of
from flayer.state.personal import Personal
from flayer.state.store import ClientStore, NodeStates, Stamp
from flayer.util.errors import DamagedFile, DataError

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


def _to_array(value: np.ndarray) -> Array:
    return Array(np.ascontiguousarray(value))


def run_error(msg: Message, exc: DataError) -> Message:
    """The reply that stops the run: what the client stands on is damaged, so no client's
    result of this run can be trusted to be the run's (`flayer.protocol.rounds` raises it)."""
    log.debug("the run cannot go on: %s", exc)  # the server says so, once
    return Message(content=RecordDict({keys.RUN_ERROR: ConfigRecord({keys.REASON: str(exc)})}),
                   reply_to=msg)


# ---- a SuperNode: one client, its state in the node's memory ------------------------------
class NodeClient:
    """The node's own client; its state lives in `context.state` (and `state-dir`)."""

    def __init__(self, cfg: Config, context: Context) -> None:
        self.cfg = cfg
        self.context = context
        self.partition_id = partition_of(cfg, context)
        set_threads(int(cfg.backend.client_cpus))
        data_dir = context.node_config.get(keys.NODE_DATA_DIR)
        self.runner: ClientRunner = runner_for(cfg, DataOf(cfg, str(data_dir) if data_dir
                                                           else None))

    def check_cohort(self, msg: Message) -> dict:
        instructions = dict(msg.content[keys.CONFIG])
        cohort = [int(p) for p in instructions.get(keys.COHORT, [self.partition_id])]
        if cohort != [self.partition_id]:
            raise ValueError(f"a message for partitions {cohort} reached the node of partition "
                             f"{self.partition_id}")
        return instructions

    def disk(self, instructions: dict) -> NodeStates | None:
        """The node's copies of its client's state for this run (with a state-dir), found by
        the run folder's key (by Flower's run id where the server names none)."""
        state_dir = self.context.node_config.get(keys.NODE_STATE_DIR)
        if not state_dir:
            return None
        key = str(instructions.get(keys.RUN_KEY) or f"run-{self.context.run_id}")
        return NodeStates(str(state_dir), key, self.partition_id)

    def restore(self, instructions: dict, stamp: Stamp) -> Personal:
        """The personal state from this node's memory, else from its state directory."""
        state = self.context.state
        if keys.STATE_ARRAYS in state:
            app = state.get(keys.STATE_APP, {})
            return Personal(
                arrays={k: v.numpy() for k, v in state[keys.STATE_ARRAYS].items()},
                meta=dict(state[keys.STATE_META]) if keys.STATE_META in state else {},
                version=int(app[keys.STATE_VERSION]) if keys.STATE_VERSION in app else None,
            )
        disk = self.disk(instructions)
        saved = disk.before(stamp) if disk is not None else None
        if saved is None:
            return Personal()
        log.info("partition %d: personal state restored from %s", self.partition_id,
                 disk.folder)
        return saved

    def keep(self, personal: Personal, instructions: dict, stamp: Stamp) -> None:
        """Keep the state in the node's memory and, with a state-dir, on its disk."""
        self.context.state[keys.STATE_ARRAYS] = ArrayRecord(
            {k: _to_array(v) for k, v in personal.arrays.items()})
        self.context.state[keys.STATE_META] = ConfigRecord(personal.meta)
        self.context.state[keys.STATE_APP] = ConfigRecord({keys.STATE_VERSION: personal.version})
        disk = self.disk(instructions)
        if disk is not None:
            disk.save(stamp, personal, int(instructions.get(keys.CHECKPOINT_ROUND, -1)))

    def train(self, msg: Message) -> Message:
        instructions = self.check_cohort(msg)
        stamp = (int(instructions[keys.SERVER_ROUND]), 0)
        try:
            saved = self.restore(instructions, stamp)
        except DamagedFile as exc:
            return run_error(msg, exc)
        done = self.runner.train(self.partition_id, instructions, saved, global_of(msg))
        self.keep(done.state, instructions, stamp)
        content = RecordDict({**encode(done.result.upload),
                              keys.client_record(self.partition_id): MetricRecord(done.metrics)})
        return Message(content=content, reply_to=msg)

    def evaluate(self, msg: Message) -> Message:
        instructions = self.check_cohort(msg)
        do_evaluate = self.partition_id in instructions.get(keys.DO_EVALUATE, [])
        stamp = (int(instructions[keys.SERVER_ROUND]), 1)
        try:
            saved = self.restore(instructions, stamp)
        except DamagedFile as exc:
            return run_error(msg, exc)
        done = self.runner.evaluate(self.partition_id, instructions, saved, global_of(msg),
                                    do_evaluate)
        self.keep(done.state, instructions, stamp)
        content = RecordDict({keys.client_record(self.partition_id): MetricRecord(done.metrics)})
        return Message(content=content, reply_to=msg)

    def query(self, msg: Message) -> Message:
        """Which client this node is: the server asks nodes that joined or came back mid-run."""
        metrics = MetricRecord({keys.PARTITION_ID: self.partition_id})
        return Message(content=RecordDict({keys.METRICS: metrics}), reply_to=msg)


# ---- a simulated executor: any client, its state in the run's store -----------------------
class Executor:
    """Serves the cohort a message names, one client after another."""

    def __init__(self, cfg: Config, store: ClientStore) -> None:
        self.cfg = cfg
        self.store = store
        set_threads(int(cfg.backend.client_cpus))
        self.runner = runner_for(cfg, DataOf(cfg))

    @staticmethod
    def cohort(instructions: dict) -> list[int]:
        return [int(p) for p in instructions.get(keys.COHORT, [])]

    def failed(self, content: RecordDict, pid: int, kind: str, exc: Exception,
               upload_bytes: int = 0) -> None:
        log.warning("partition %d: %s failed: %s: %s", pid, kind, type(exc).__name__, exc)
        content[keys.failed_record(pid)] = ConfigRecord(
            {keys.REASON: f"{type(exc).__name__}: {exc}", keys.UPLOAD_BYTES: upload_bytes})

    def train(self, msg: Message) -> Message:
        instructions = dict(msg.content[keys.CONFIG])
        spec = spec_of(msg.content[keys.UPLOAD_SPEC])
        global_arrays = global_of(msg)
        total = WeightedSum()
        content = RecordDict()
        for pid in self.cohort(instructions):
            nbytes = 0
            try:
                done = self.runner.train(pid, instructions, self.store.load(pid), global_arrays)
                self.store.save(pid, done.state)
                weight = float(done.result.num_examples)
                if not weight > 0:
                    raise ReplyError(f"num-examples {weight}")
                contribution, nbytes = checked(done.result.upload, spec, weight)
                if not math.isfinite(done.result.train_loss):
                    raise ReplyError(f"train loss {done.result.train_loss}")
            except DataError as exc:  # the run's data or store, not this client's work
                return run_error(msg, exc)
            except Exception as exc:  # noqa: BLE001 - a client's failure is the server's count
                self.failed(content, pid, "training", exc, nbytes)
                continue
            total.add(contribution)
            content[keys.client_record(pid)] = MetricRecord(
                {**done.metrics, keys.UPLOAD_BYTES: nbytes})
        content[keys.SUM_NUM] = ArrayRecord({k: _to_array(n) for k, n, _ in total.items()})
        content[keys.SUM_DEN] = ArrayRecord({k: _to_array(d) for k, _, d in total.items()})
        return Message(content=content, reply_to=msg)

    def evaluate(self, msg: Message) -> Message:
        instructions = dict(msg.content[keys.CONFIG])
        evaluated = {int(p) for p in instructions.get(keys.DO_EVALUATE, [])}
        global_arrays = global_of(msg)
        content = RecordDict()
        for pid in self.cohort(instructions):
            try:
                done = self.runner.evaluate(pid, instructions, self.store.load(pid),
                                            global_arrays, pid in evaluated)
                self.store.save(pid, done.state)
            except DataError as exc:
                return run_error(msg, exc)
            except Exception as exc:  # noqa: BLE001
                self.failed(content, pid, "evaluation", exc)
                continue
            content[keys.client_record(pid)] = MetricRecord(done.metrics)
        return Message(content=content, reply_to=msg)


def config_of(context: Context) -> Config:
    """Under `flwr run` the run config carries the Hydra overrides as one string."""
    overrides = str(context.run_config.get(keys.RUN_OVERRIDES, ""))
    return config_from_overrides(deployed_overrides(overrides))


def make_client_app(cfg: Config | None = None, store: Path | None = None) -> ClientApp:
    """The ClientApp: a simulated executor when given the run's config and state store, else
    a SuperNode's client (bound to a composed config, or composing its config from each
    run's run config under `flwr run`)."""
    client_app = ClientApp()

    def serving(context: Context) -> NodeClient | Executor:
        if cfg is not None and store is not None:
            return Executor(cfg, ClientStore(store))
        if cfg is not None:
            return NodeClient(cfg, context)
        show_info_logs()  # a ClientApp process of a SuperNode: its log shows flayer's
        return NodeClient(config_of(context), context)

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        return serving(context).train(msg)

    @client_app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return serving(context).evaluate(msg)

    @client_app.query()
    def query(msg: Message, context: Context) -> Message:
        server = serving(context)
        if not isinstance(server, NodeClient):
            raise ValueError("a simulated executor serves any client; it is never queried")
        return server.query(msg)

    return client_app


app = make_client_app()  # for `flwr run` ([tool.flwr.app.components] in pyproject.toml)
