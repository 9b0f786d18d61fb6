"""The conversation socket: owner-only; sends messages, stops turns, and streams turns as htmx fragments.

Client → server JSON: `{"action": "send", "text": ..., "thinking": bool, "files": [uuid, ...]}`, `{"action": "stop"}`,
`{"action": "resume", "turn": uuid, "after": seq}` (sent on every (re)connect; one without `turn`
when nothing is running). Server → client: HTML of htmx out-of-band swaps, at most one frame per
FRAME_S per socket. Delivery is exactly-once and in order per turn: a resume replays the stream from
the client's last seq, live events at or below what this socket already sent are dropped, and a gap
(an event the channel layer lost) is filled from the stream before the newer event is applied.
The socket also joins its user's files group and shows each `file.status` (extraction progress) on
the file's chips.
"""

from __future__ import annotations

import asyncio
import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string

from agent.events import TurnStatus
from agent.stream import StreamEvent, decode
from documents import services as documents
from documents import ui as documents_ui

from . import queue, services
from . import redis as chat_redis
from .forms import MessageForm, first_error
from .fragments import TurnProjection, project_from_db
from .models import Conversation, Turn

log = logging.getLogger(__name__)

FRAME_S = 0.03  # ~33 frames/s: smooth to read, cheap for the browser, small added latency
MAX_PENDING = 10_000  # live events held before the client's first message


class ConversationConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        uuid = self.scope["url_route"]["kwargs"]["conversation_uuid"]
        self.conversation = None
        if user is not None and user.is_authenticated:
            self.conversation = await self._conversation(user, uuid)
        if self.conversation is None:
            await self.close(code=4404)
            return
        self.user = user
        # Forms in fragments rendered here (regenerate, edit) post with the CSRF cookie's secret,
        # which Django accepts like a masked token.
        self.csrf_token = self.scope.get("cookies", {}).get(settings.CSRF_COOKIE_NAME, "")
        self.group = chat_redis.keys().group(uuid)
        self.turns: dict[str, TurnProjection] = {}
        self.pending: list[StreamEvent] = []
        self.ready = False
        self.extra: list[str] = []  # fragments that belong to no turn (errors, new exchanges)
        self.dirty: set[str] = set()
        self.last_flush = 0.0
        self.flush_handle: asyncio.TimerHandle | None = None
        self.files_group = documents.owner_group(user.pk)
        self.cite = await database_sync_to_async(documents_ui.citations_for)(self.conversation)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.channel_layer.group_add(self.files_group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.channel_layer.group_discard(self.files_group, self.channel_name)
        if getattr(self, "flush_handle", None):
            self.flush_handle.cancel()

    # -- from the browser ---------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        """A frame that is not a JSON object of readable text gets an error frame; the socket stays open."""
        content, problem = _decode_frame(text_data, bytes_data)
        if problem:
            self._error(problem)
            await self._flush()
            return
        if content.get("action") not in ACTIONS:
            # Valid JSON this server does not speak: a client from another version of the page.
            await self.close(code=CLOSE_UNKNOWN_ACTION, reason="This page is out of date: reload it.")
            return
        await self.receive_json(content, **kwargs)

    async def receive_json(self, content, **kwargs):
        action = content.get("action")
        if action == "resume":
            if content.get("turn"):
                await self._resume(str(content["turn"]), _int(content.get("after")))
        elif action == "send":
            await self._send_message(content)
        elif action == "stop":
            await self._stop()
        if not self.ready:
            self.ready = True
            pending, self.pending = self.pending, []
            for event in pending:
                await self._live(event)
        await self._flush_soon()

    async def _send_message(self, content):
        form = MessageForm({"text": content.get("text", ""), "thinking": content.get("thinking")})
        if not form.is_valid():
            self._error(first_error(form))
            return
        files = content.get("files") or []
        files = [files] if isinstance(files, str) else files
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            self._error("That message could not be read (its files are not a list); reload the page.")
            return
        try:
            turn = await database_sync_to_async(self._start_turn)(
                form.cleaned_data["text"], form.cleaned_data["thinking"], files
            )
        except services.ChatError as exc:
            self._error(exc.message)
            return
        projection = self._projection(str(turn.uuid), status=turn.status)
        self.turns[projection.uuid] = projection
        self.extra.append(await self._exchange_fragment(turn, projection))
        await self._tell_queue_place(turn, projection)
        self._error("")
        await self.channel_layer.group_send(self.group, {"type": "turn.created", "turn": projection.uuid})

    def _start_turn(self, text, thinking, files=()):
        client_ip = (self.scope.get("client") or [None])[0]
        turn = services.start_turn(
            self.user, self.conversation, text, thinking, client_ip=client_ip, files=files
        )
        self.cite = documents_ui.citations_for(self.conversation)
        pref = services.preferences(self.user)
        if pref.long_thinking != thinking:
            pref.long_thinking = thinking
            pref.save(update_fields=["long_thinking"])
        return turn

    async def _stop(self):
        turn = await database_sync_to_async(services.active_turn)(self.conversation)
        if turn is not None:
            await database_sync_to_async(services.cancel)(turn)

    async def _resume(self, turn_uuid: str, after: int):
        """Bring the client from `after` to now for one turn; later live events continue from there."""
        if turn_uuid in self.turns:
            return  # this socket already sent it; the client's `after` is older than what it has
        turn = await self._turn(turn_uuid)
        if turn is None:
            return
        projection = self._projection(turn_uuid, started=turn.started, status=turn.status)
        events = await replay_events(turn_uuid)
        if events and events[0].seq > 1:
            # The worker caps a stream's length; a turn longer than the cap lost its first events.
            # Postgres holds the checkpointed text of those, so rebuild the whole turn from there.
            log.info("stream of turn %s starts at seq %d; rebuilding from Postgres", turn_uuid, events[0].seq)
            projection = await database_sync_to_async(project_from_db)(turn)
            projection.extra_context = {"csrf_token": self.csrf_token}
            projection.cite = self.cite
            projection.seq = events[-1].seq
            self.extra.append(await database_sync_to_async(projection.render_full)())
            self.turns[turn_uuid] = projection
            return
        if events is None:
            if turn.is_finished or turn.steps:
                # The stream is gone: show the checkpointed turn whole, from Postgres.
                projection = await database_sync_to_async(project_from_db)(turn)
                projection.extra_context = {"csrf_token": self.csrf_token}
                projection.cite = self.cite
                projection.seq = max(projection.seq, after)
                self.extra.append(await database_sync_to_async(projection.render_full)())
            else:
                projection.seq = after
                await self._tell_queue_place(turn, projection)
            self.turns[turn_uuid] = projection
            return
        self.turns[turn_uuid] = projection
        for item in events:
            projection.apply(item.event, item.seq)
            if item.seq == after:
                projection.discard_frame()  # the client already shows all of this
        if projection.seq <= after:
            projection.discard_frame()
            projection.seq = max(projection.seq, after)
        self.dirty.add(turn_uuid)

    # -- from the worker (through the channel layer) ------------------------------------------

    async def turn_events(self, message):
        """A batch of published events, in seq order (`agent.stream.live_message`)."""
        events = []
        for data in message["events"]:
            try:
                events.append(decode(data))
            except (KeyError, TypeError, ValueError):
                log.warning("dropping an undecodable turn event: %.200r", data)
        if not self.ready:
            room = MAX_PENDING - len(self.pending)
            self.pending.extend(events[: max(0, room)])
            return
        for item in events:
            await self._live(item)
        await self._flush_soon()

    async def file_status(self, message):
        """Extraction of one of the user's files moved on (documents.services.notify): its chips'
        status lines show it, in this page's composer and messages alike."""
        status = {key: message.get(key) for key in ("uuid", "status", "parts_done", "parts_total", "error")}
        status["final"] = status["status"] in documents_ui.FINAL
        self.extra.append(
            render_to_string("documents/partials/file_status.html", {"f": status, "oob": True, "poll": True})
        )
        if status["status"] == "ready":
            self.cite = await database_sync_to_async(documents_ui.citations_for)(self.conversation)
        await self._flush_soon()

    async def turn_queue(self, message):
        """A queued turn's place in the queue moved (chat/queue.py): its status line says so."""
        projection = self.turns.get(message.get("turn"))
        if self.ready and projection is not None and projection.status == "queued":
            projection.apply(TurnStatus(text=str(message.get("text", ""))))
            self.dirty.add(message["turn"])
            await self._flush_soon()

    async def _tell_queue_place(self, turn, projection) -> None:
        if turn.status == Turn.Status.QUEUED:
            projection.apply(TurnStatus(text=await database_sync_to_async(queue.notice_for)(turn)))
            self.dirty.add(str(turn.uuid))

    async def turn_created(self, message):
        """Another tab started a turn in this conversation: show its question at once."""
        if self.ready and message["turn"] not in self.turns:
            await self._adopt(message["turn"], replay=False)
            await self._flush_soon()

    async def _live(self, item: StreamEvent):
        projection = self.turns.get(item.turn)
        if projection is None:
            await self._adopt(item.turn, replay=True)
            projection = self.turns.get(item.turn)
            if projection is None:
                return
        if item.seq <= projection.seq:
            return  # already sent (replayed, or a duplicate delivery)
        if item.seq > projection.seq + 1:
            for earlier in await replay_events(item.turn, projection.seq, item.seq - 1) or []:
                projection.apply(earlier.event, earlier.seq)
        projection.apply(item.event, item.seq)
        self.dirty.add(item.turn)

    async def _adopt(self, turn_uuid: str, replay: bool):
        """Show a turn this socket has not seen (started elsewhere): its question, then its events."""
        turn = await self._turn(turn_uuid)
        if turn is None:
            return
        projection = self._projection(turn_uuid, started=turn.started, status=turn.status)
        self.turns[turn_uuid] = projection
        self.extra.append(await self._exchange_fragment(turn, projection))
        await self._tell_queue_place(turn, projection)
        if replay:
            for item in await replay_events(turn_uuid) or []:
                projection.apply(item.event, item.seq)
            self.dirty.add(turn_uuid)

    # -- frames -------------------------------------------------------------------------------

    def _error(self, text: str):
        self.extra.append(render_to_string("chat/partials/composer_error.html", {"error": text}))

    async def _flush_soon(self):
        """Send now if the last frame is older than FRAME_S, else once it is (coalescing the rest)."""
        if self.flush_handle is not None or not (self.dirty or self.extra):
            return
        loop = asyncio.get_running_loop()
        wait = self.last_flush + FRAME_S - loop.time()
        if wait <= 0:
            await self._flush()
        else:
            self.flush_handle = loop.call_later(wait, lambda: asyncio.ensure_future(self._flush()))

    async def _flush(self):
        self.flush_handle = None
        parts, self.extra = self.extra, []
        for turn_uuid in sorted(self.dirty):
            projection = self.turns.get(turn_uuid)
            if projection is not None:
                parts.append(projection.take_frame())
        self.dirty.clear()
        frame = "".join(parts)
        if frame:
            self.last_flush = asyncio.get_running_loop().time()
            await self.send(text_data=frame)

    def _projection(self, turn_uuid: str, **kwargs) -> TurnProjection:
        projection = TurnProjection(turn_uuid, **kwargs)
        projection.extra_context = {"csrf_token": self.csrf_token}
        projection.cite = self.cite
        return projection

    # -- database -----------------------------------------------------------------------------

    @database_sync_to_async
    def _conversation(self, user, uuid):
        return Conversation.objects.filter(uuid=uuid, owner=user).first()

    @database_sync_to_async
    def _turn(self, turn_uuid):
        try:
            return Turn.objects.select_related("user_message").get(
                uuid=turn_uuid, conversation_id=self.conversation.pk
            )
        except (Turn.DoesNotExist, ValueError, Exception) as exc:  # a malformed uuid is a ValidationError
            if not isinstance(exc, Turn.DoesNotExist):
                log.info("resume for an unusable turn id %r: %s", turn_uuid, exc)
            return None

    @database_sync_to_async
    def _exchange_fragment(self, turn, projection):
        html = render_to_string(
            "chat/partials/exchange.html",
            {
                "message": turn.user_message,
                "p": projection,
                "conversation": self.conversation,
                "csrf_token": self.csrf_token,
                "uploads": documents_ui.turn_uploads(turn),
            },
        )
        return f'<div hx-swap-oob="beforeend:#thread">{html}</div><div id="empty-state" hidden></div>'


async def replay_events(turn_uuid, after: int = 0, until: int | None = None) -> list[StreamEvent] | None:
    """The turn's published events after `after` (up to `until`); None when Redis has no stream for it."""
    return await chat_redis.async_turn_stream(turn_uuid).read(after, until)


ACTIONS = ("send", "stop", "resume")
CLOSE_UNKNOWN_ACTION = 4400  # the client shows the close reason (static/chat/chat.js)


def _decode_frame(text_data, bytes_data) -> tuple[dict, str]:
    """The frame as a JSON object, or an empty dict and what is wrong with it, in words for the user."""
    limit = settings.CHAT_MAX_MESSAGE_CHARS * 4 + 8192  # JSON escaping can quadruple the text
    if text_data is None:
        return {}, "The chat speaks JSON text frames, not binary ones."
    if len(text_data) > limit:
        return {}, "That message is too long to send."
    try:
        content = json.loads(text_data)
        # json.loads accepts escaped lone surrogates ("\ud800"), which no encoder can write back out.
        json.dumps(content, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # ValueError covers JSONDecodeError and UnicodeEncodeError
        return (
            {},
            "That message could not be read (it is not valid JSON text); reload the page and try again.",
        )
    if not isinstance(content, dict):
        return {}, "That message could not be read (it is not a JSON object); reload the page and try again."
    return content, ""


def _int(value) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0
