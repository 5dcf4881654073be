"""A SuperNode's client (`flwr run` on real machines): one client per node.

Its node config says which client it is (`partition-id`, checked against the run's
`num_clients` when `num-partitions` is given), where its data comes from (a partition of the
run's dataset, or its own folder `data-dir`) and where it keeps copies of its personal state
(`state-dir`, per run folder). It keeps that state in its memory between messages and replies
with its own upload and one metrics record. A node whose client is a new one (`new_clients`)
is only ever asked to evaluate it as a client that arrives late: it reads and keeps no state.
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from flayer.apps.client_work import ClientRunner, DataOf, global_of, run_error, runner_for, to_array
from flayer.apps.runtime import set_threads
from flayer.config.schema import Config
from flayer.protocol import keys
from flayer.protocol.upload import encode
from flayer.state.personal import Personal
from flayer.state.store import NodeStates, Stamp
from flayer.util.errors import DamagedFile

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
            {k: to_array(v) for k, v in personal.arrays.items()})
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
        if self.partition_id in instructions.get(keys.NEW_CLIENTS, []):
            metrics = self.runner.arrive(self.partition_id, instructions, global_of(msg))
            content = RecordDict({keys.client_record(self.partition_id): MetricRecord(metrics)})
            return Message(content=content, reply_to=msg)
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


