"""An in-process Grid: the real ServerApp logic and the real ClientApp handlers, with one
Context per node and no Ray, so whole methods can be tested in seconds."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from flayer.apps.client_app import handle_evaluate, handle_train
from flayer.apps.server_app import run_server
from flayer.config import Config
from flayer.strategy import PflStrategy, RoundRecord

FIRST_NODE = 1000


class LocalGrid(Grid):
    def __init__(self, cfg: Config, down: dict[int, int] | None = None) -> None:
        self.cfg = cfg
        self.down = down or {}  # partition id -> first server round its node is gone
        self.contexts = {
            FIRST_NODE + k: Context(
                run_id=1, node_id=FIRST_NODE + k,
                node_config={"partition-id": k, "num-partitions": cfg.num_clients},
                state=RecordDict(), run_config={},
            )
            for k in range(cfg.num_clients)
        }

    def set_run(self, run_id: int) -> None:  # pragma: no cover - unused
        pass

    @property
    def run(self):  # pragma: no cover - unused
        raise NotImplementedError

    def create_message(self, *args, **kwargs):  # pragma: no cover - unused
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages):  # pragma: no cover - unused
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover - unused
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout=None) -> list[Message]:
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            gone_from = self.down.get(node - FIRST_NODE)
            if gone_from is not None and msg.content["config"]["server-round"] >= gone_from:
                continue  # no reply, as from a node that went away
            context = self.contexts[node]
            handler = handle_train if msg.metadata.message_type == MessageType.TRAIN else (
                handle_evaluate)
            reply = handler(msg, context, self.cfg)
            replies.append(reply)
        return replies


def run_local(cfg: Config, down: dict[int, int] | None = None
              ) -> tuple[PflStrategy, list[RoundRecord], LocalGrid]:
    """Run a whole experiment in this process; returns the strategy and every round."""
    for attr in ("_run_id", "_node_id", "_task_id"):
        setattr(TaskIdentity, attr, 1)
    records: list[RoundRecord] = []
    grid = LocalGrid(cfg, down)
    strategy = run_server(grid, cfg, records.append)
    return strategy, records, grid
