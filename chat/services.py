"""What the chat can do, as plain functions views and the consumer call: start, regenerate, edit,
cancel, share and export a conversation, and read its visible thread and the sidebar list.

Branches: editing or regenerating the last exchange creates a new user message; the old user
message and its old answer point at it through `superseded_by`, so the visible thread (and the
model's context) is exactly the messages with `superseded_by IS NULL`, and older branches stay
reachable through `earlier_versions`.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from agent.events import TurnFinished
from agent.stream import live_message, request_cancel
from documents import services as documents

from . import queue
from . import redis as chat_redis
from .models import Conversation, Message, Turn, UserPreference
from .tasks import run_turn

log = logging.getLogger(__name__)

RUNNING = (Turn.Status.QUEUED, Turn.Status.RUNNING)


class ChatError(Exception):
    """A problem the user caused or can wait out; `message` is shown as is, `status` is the HTTP code."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class MessageTooLong(ChatError):
    status = 413


class RateLimited(ChatError):
    status = 429


class TurnInProgress(ChatError):
    status = 409


class ServerBusy(ChatError):
    status = 503


# -- turns ---------------------------------------------------------------------------------------


def check_message(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ChatError("Write a message first.")
    if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise MessageTooLong(
            f"That message is {len(text):,} characters; the limit is {settings.CHAT_MAX_MESSAGE_CHARS:,}."
        )
    return text


def check_rate_limit(user, client_ip: str | None = None) -> None:
    """Bounds on new turns: queued turns across the installation, then a one-minute window per user
    and per client address (several accounts behind one address share it), counted in Redis so every
    web process agrees.
    """
    if Turn.objects.filter(status=Turn.Status.QUEUED).count() >= settings.CHAT_MAX_QUEUED_TURNS:
        raise ServerBusy("The server is busy answering others; try again in a minute.")
    window = int(time.time() // 60)
    if _count_in_window("user", user.pk, window) > settings.CHAT_TURNS_PER_MINUTE:
        raise RateLimited(
            f"You have started {settings.CHAT_TURNS_PER_MINUTE} answers this minute; wait a moment and try again."
        )
    if client_ip and _count_in_window("ip", client_ip, window) > settings.CHAT_TURNS_PER_MINUTE_PER_IP:
        raise RateLimited(
            "Too many answers were started from your address this minute; wait a moment and try again."
        )


def _count_in_window(kind: str, who, window: int) -> int:
    key = chat_redis.key("chat", "ratelimit", "turns", kind, who, window)
    client = chat_redis.sync_client()
    count = client.incr(key)
    if count == 1:
        client.expire(key, 120)
    return count


def active_turn(conversation) -> Turn | None:
    return conversation.turns.filter(status__in=RUNNING).order_by("-created").first()


def enqueue_turn(turn_id: int) -> None:
    """Hand the turn to a worker (`run_turn` in chat/tasks.py); called after the transaction commits.
    The queued turns hear where they stand (chat/queue.py)."""
    run_turn.delay(turn_id)
    queue.announce()


def title_from(text: str) -> str:
    first_line = text.strip().splitlines()[0] if text.strip() else "New chat"
    return first_line[:80] + ("…" if len(first_line) > 80 else "")


def _create_turn(conversation, text: str, thinking: bool) -> Turn:
    message = Message.objects.create(conversation=conversation, role=Message.Role.USER, content=text)
    turn = Turn.objects.create(
        conversation=conversation,
        user_message=message,
        status=Turn.Status.QUEUED,
        thinking=thinking,
        model=settings.LLM_MODEL,
    )
    if not conversation.title:
        conversation.title = title_from(text)
    conversation.save(update_fields=["title", "updated"])
    transaction.on_commit(lambda: enqueue_turn(turn.id))
    return turn


def rerun_turn(turn: Turn) -> Turn:
    """A new queued turn answering the same user message (the admin console's re-run); enqueued on commit."""
    with transaction.atomic():
        new_turn = Turn.objects.create(
            conversation_id=turn.conversation_id,
            user_message_id=turn.user_message_id,
            status=Turn.Status.QUEUED,
            thinking=turn.thinking,
            model=settings.LLM_MODEL,
        )
        transaction.on_commit(lambda: enqueue_turn(new_turn.id))
    return new_turn


def start_turn(user, conversation, text: str, thinking: bool, client_ip: str | None = None, files=()) -> Turn:
    """Store the user's message and a queued turn in one transaction, with the user's files (uuids)
    attached to it; enqueue the turn on commit. A file that is not the user's refuses the whole message."""
    text = check_message(text)
    if active_turn(conversation) is not None:
        raise TurnInProgress("An answer is still being written; wait for it or stop it first.")
    check_rate_limit(user, client_ip)
    try:
        with transaction.atomic():
            turn = _create_turn(conversation, text, thinking)
            if files:
                documents.attach(user, files, conversation, turn=turn)
            return turn
    except documents.UploadRefused as exc:
        raise ChatError(exc.message) from exc


def last_exchange(conversation) -> tuple[Message | None, Turn | None]:
    message = (
        conversation.messages.filter(role=Message.Role.USER, superseded_by__isnull=True)
        .order_by("-created", "-id")
        .first()
    )
    if message is None:
        return None, None
    return message, message.turns.order_by("-created").first()


def _branch(
    user, conversation, old_message: Message, text: str, thinking: bool, client_ip: str | None = None
) -> Turn:
    """Replace the last exchange with a new one; the old question and answer stay reachable."""
    last_message, last_turn = last_exchange(conversation)
    if last_message is None or last_message.pk != old_message.pk:
        raise ChatError("Only the last message can be edited or regenerated.")
    if last_turn is not None and not last_turn.is_finished:
        raise TurnInProgress("Stop the current answer before changing it.")
    check_rate_limit(user, client_ip)
    with transaction.atomic():
        turn = _create_turn(conversation, text, thinking)
        Message.objects.filter(pk=old_message.pk).update(superseded_by=turn.user_message)
        Message.objects.filter(turn__user_message=old_message, role=Message.Role.ASSISTANT).update(
            superseded_by=turn.user_message
        )
    return turn


def regenerate(user, conversation, thinking: bool | None = None, client_ip: str | None = None) -> Turn:
    """Answer the last question again; the earlier answer stays reachable."""
    message, turn = last_exchange(conversation)
    if message is None:
        raise ChatError("There is nothing to regenerate yet.")
    flag = turn.thinking if thinking is None and turn is not None else bool(thinking)
    return _branch(user, conversation, message, message.content, flag, client_ip)


def edit_and_resend(
    user, conversation, message: Message, text: str, thinking: bool, client_ip: str | None = None
) -> Turn:
    """Send an edited version of the last question; the original and its answer stay reachable."""
    return _branch(user, conversation, message, check_message(text), thinking, client_ip)


def _publish(turn: Turn, event) -> None:
    """Publish one event after the turn's last one, through the turn's stream, to its sockets."""
    stream = chat_redis.turn_stream(turn.uuid)
    wired = stream.append([event], after=stream.last_seq())
    stream.expire_in(settings.AGENT_EVENTS_TTL)
    async_to_sync(get_channel_layer().group_send)(
        chat_redis.keys().group(turn.conversation.uuid), live_message(wired)
    )


def cancel(turn: Turn) -> None:
    """Ask the worker to stop the turn (it keeps the partial output and marks the turn cancelled).

    A turn no worker has claimed yet is cancelled here directly, so a conversation is never stuck
    behind a turn that will not start.
    """
    request_cancel(chat_redis.sync_client(), chat_redis.keys(), turn.uuid)
    claimed = Turn.objects.filter(pk=turn.pk, status=Turn.Status.QUEUED, lease_owner="").update(
        status=Turn.Status.CANCELLED, finished=timezone.now()
    )
    if claimed:
        _publish(turn, TurnFinished(status="cancelled", error=""))
        queue.announce()


# -- preferences ---------------------------------------------------------------------------------


def preferences(user) -> UserPreference:
    pref, _ = UserPreference.objects.get_or_create(user=user)
    return pref


# -- reading -------------------------------------------------------------------------------------


@dataclass
class Exchange:
    """One visible question with its current answer, and the earlier versions it replaced."""

    message: Message
    turn: Turn | None
    is_last: bool = False
    earlier: list[tuple[Message, Turn | None]] = field(default_factory=list)


def thread(conversation) -> list[Exchange]:
    messages = list(
        conversation.messages.filter(role=Message.Role.USER)
        .prefetch_related("turns")
        .order_by("created", "id")
    )
    turns_by_message = {m.pk: sorted(m.turns.all(), key=lambda t: t.created) for m in messages}
    by_pk = {m.pk: m for m in messages}
    exchanges = []
    for m in messages:
        if m.superseded_by_id is None:
            turns = turns_by_message[m.pk]
            exchanges.append(Exchange(message=m, turn=turns[-1] if turns else None))
    # Walk each visible message's chain of earlier versions (newest first).
    replaced: dict[int, list[Message]] = {}
    for m in messages:
        if m.superseded_by_id is not None:
            replaced.setdefault(m.superseded_by_id, []).append(m)
    for ex in exchanges:
        stack = list(replaced.get(ex.message.pk, []))
        while stack:
            old = stack.pop(0)
            turns = turns_by_message.get(old.pk, [])
            ex.earlier.append((old, turns[-1] if turns else None))
            stack.extend(replaced.get(old.pk, []))
        ex.earlier.sort(key=lambda pair: pair[0].created, reverse=True)
    if exchanges:
        exchanges[-1].is_last = True
    del by_pk
    return exchanges


def conversations_for(user, q: str = "", archived: bool = False):
    """The sidebar: pinned first, then most recently active; `q` searches titles and message text."""
    qs = Conversation.objects.filter(owner=user, archived=archived)
    q = (q or "").strip()
    if q:
        query = SearchQuery(q, config="english", search_type="websearch")
        matching = Message.objects.annotate(sv=SearchVector("content", config="english")).filter(
            conversation=OuterRef("pk"), sv=query
        )
        qs = qs.filter(Q(title__icontains=q) | Q(Exists(matching)))
    return qs.order_by("-pinned", "-updated")


# -- sharing and export --------------------------------------------------------------------------


def share(conversation) -> str:
    if not conversation.share_token:
        conversation.share_token = secrets.token_urlsafe(24)
        conversation.save(update_fields=["share_token"])
    return conversation.share_token


def revoke_share(conversation) -> None:
    conversation.share_token = None
    conversation.save(update_fields=["share_token"])


def _turn_dict(turn: Turn | None) -> dict | None:
    if turn is None:
        return None
    steps = []
    for step in turn.step_rows.prefetch_related("tool_calls"):
        steps.append(
            {
                "index": step.index,
                "reasoning": step.reasoning,
                "content": step.content,
                "finish_reason": step.finish_reason,
                "tool_calls": [
                    {
                        "name": c.name,
                        "arguments": c.arguments,
                        "result": c.result,
                        "status": c.status,
                        "error": c.error,
                    }
                    for c in step.tool_calls.all()
                ],
            }
        )
    answer = getattr(turn, "answer", None) if hasattr(turn, "answer") else None
    return {
        "uuid": str(turn.uuid),
        "status": turn.status,
        "thinking": turn.thinking,
        "model": turn.model,
        "error": turn.error,
        "started": turn.started.isoformat() if turn.started else None,
        "finished": turn.finished.isoformat() if turn.finished else None,
        "answer": answer.content if answer is not None else "",
        "reasoning": answer.reasoning if answer is not None else "",
        "steps": steps,
    }


def export_json(conversation) -> dict:
    """The visible thread with every turn's steps and tool calls (earlier versions listed apart)."""
    exchanges = thread(conversation)
    return {
        "uuid": str(conversation.uuid),
        "title": conversation.title,
        "created": conversation.created.isoformat(),
        "updated": conversation.updated.isoformat(),
        "exchanges": [
            {
                "user": {"content": ex.message.content, "created": ex.message.created.isoformat()},
                "turn": _turn_dict(ex.turn),
                "earlier_versions": [
                    {"user": {"content": m.content, "created": m.created.isoformat()}, "turn": _turn_dict(t)}
                    for m, t in ex.earlier
                ],
            }
            for ex in exchanges
        ],
    }


def export_markdown(conversation) -> str:
    lines = [f"# {conversation.title or 'Conversation'}", ""]
    for ex in thread(conversation):
        lines += ["## You", "", ex.message.content, ""]
        data = _turn_dict(ex.turn)
        if data is None:
            continue
        lines += ["## Assistant", ""]
        reasoning = "\n\n".join(s["reasoning"] for s in data["steps"] if s["reasoning"]) or data["reasoning"]
        if reasoning:
            quoted = "\n".join("> " + line for line in reasoning.splitlines())
            lines += ["> **Thinking**", ">", quoted, ""]
        for step in data["steps"]:
            for call in step["tool_calls"]:
                lines += [f"- Tool `{call['name']}` ({call['status']}): `{call['arguments'][:200]}`"]
        answer = data["answer"] or (data["steps"][-1]["content"] if data["steps"] else "")
        lines += ["", answer or f"*({data['status']})*", ""]
    return "\n".join(lines).rstrip() + "\n"
