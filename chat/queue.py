"""Where queued turns stand: each waiting turn's status line says how many turns are ahead of it,
updated live whenever the queue moves (a turn is queued, taken by a worker, or cancelled).

The line travels as a Channels message of its own (`turn.queue`) to the turn's conversation group,
not through the turn's event stream: a queued turn's stream belongs to the worker that will take it
(its seqs must stay the worker's alone). A socket that (re)connects asks `notice_for` itself."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from . import redis as chat_redis
from .models import Turn

log = logging.getLogger(__name__)

MESSAGE_TYPE = "turn.queue"


def notice(ahead: int) -> str:
    if ahead == 0:
        return "Waiting for a free worker — yours is next"
    return f"Waiting for a free worker — {ahead} turn{'s' if ahead != 1 else ''} ahead of yours"


def positions() -> list[tuple[str, str, int]]:
    """(turn uuid, conversation uuid, turns ahead of it) for every queued turn, oldest first."""
    rows = (
        Turn.objects.filter(status=Turn.Status.QUEUED)
        .order_by("created", "id")
        .values_list("uuid", "conversation__uuid")
    )
    return [(str(turn), str(conversation), ahead) for ahead, (turn, conversation) in enumerate(rows)]


def notice_for(turn: Turn) -> str:
    """The status line of one queued turn now ("" when it is not queued)."""
    if turn.status != Turn.Status.QUEUED:
        return ""
    ahead = Turn.objects.filter(status=Turn.Status.QUEUED, created__lt=turn.created).count()
    return notice(ahead)


async def _send_all(layer, messages: list[tuple[str, dict]]) -> None:
    for group, message in messages:
        await layer.group_send(group, message)


def announce() -> int:
    """Send every queued turn its place to its conversation's sockets; returns how many were told.
    Best effort: the queue is told again at its next move, and a reconnecting page asks itself."""
    try:
        keys = chat_redis.keys()
        queued = positions()
        messages = [
            (keys.group(conversation), {"type": MESSAGE_TYPE, "turn": turn, "text": notice(ahead)})
            for turn, conversation, ahead in queued
        ]
        if messages:
            async_to_sync(_send_all)(get_channel_layer(), messages)  # one event loop for all of them
        return len(queued)
    except Exception:
        log.exception("could not tell the queued turns where they stand")
        return 0
