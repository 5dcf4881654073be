"""New instructions from the server to a node.

Under Flower's runtimes (the ServerApp in a simulation or beside a SuperLink) a new `Message`
takes its run and sender from the runtime; an engine that runs the server's loop itself, in
one process (`flayer.apps.inprocess`), gives them explicitly (`stamped`) through Flower's public
`Metadata`."""

from __future__ import annotations

import time
from collections.abc import Callable

from flwr.app import DEFAULT_TTL, Message, Metadata, RecordDict

# (content, destination node, message type) -> a new instruction message
NewMessage = Callable[[RecordDict, int, str], Message]


def flower_message(content: RecordDict, node: int, kind: str) -> Message:
    """A new instruction, stamped by the Flower runtime this server runs in."""
    return Message(content=content, dst_node_id=node, message_type=kind)


def stamped(run_id: int, server_node: int) -> NewMessage:
    """New instructions of this run, from this server node, where no Flower runtime runs."""

    def new(content: RecordDict, node: int, kind: str) -> Message:
        return Message(content=content, metadata=Metadata(
            run_id=run_id, message_id="", src_node_id=server_node, dst_node_id=node,
            reply_to_message_id="", group_id="", created_at=time.time(), ttl=DEFAULT_TTL,
            message_type=kind))

    return new
