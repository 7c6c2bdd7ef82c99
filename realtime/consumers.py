"""The campaign room: `/ws/campaigns/<id>/` (CONTRACTS §3).

Delivery is gapless and in order per connection even though the channel layer may
drop or reorder: each connection remembers the last seq it delivered, drops what is
older, and reads any gap from the database before sending what is newer. Live events
are not sent before the client's `client.hello`; the hello reads the backlog after
the group is joined, so nothing falls between the backlog and the live stream.

A narration still streaming when a page says hello (a reload mid-narration) is sent to it
whole so far (`narration.delta` with `offset` 0, from what orchestrator.streaming keeps),
after the backlog and before `server.ready`; the live deltas then continue it. Each socket
remembers how much of the streaming turn's text it has sent, so that a delta it already
covered is not sent twice, and one it missed (a dropped group message) is filled in from
what is kept.

Committed events reach a socket through the channel layer's room group: with the hub
(realtime.hub, the default on Redis) one subscription per room per process, and each
event's frame made once per process (`event_texts`) and sent as is to every socket whose
viewer may see it. The live path sends envelopes as committed (`event_envelope`): the
names of deleted accounts are withheld in what is read back from the database (catch-up,
`selectors.event_envelopes`), and a live `player_left` of a deleted account carries the
placeholder name itself.

A client that stops reading does not hold the process: under daphne each frame waits
until the socket's write buffer has room (realtime.backpressure), and a socket whose
queue in the hub overflows meanwhile is closed with 4408; its client reconnects and
catches up from its last seq.

A socket also listens to the end of its login (realtime.services: the session's group or
the user's token group): a logout closes it with 4401 on whichever process it lives.
Membership and login are read once more after the groups are joined: a kick or a logout
committed between the first read and the join sent its message before this socket
listened, and would otherwise be missed (the socket would stream on).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from channels.consumer import get_handler_name
from channels.db import aclose_old_connections, database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django_ratelimit.exceptions import Ratelimited
from pydantic import ValidationError

from campaigns import selectors, services
from campaigns.models import Membership
from campaigns.tools import roll_make
from campaigns.whispers import whisper_send
from orchestrator.streaming import narration_so_far_get
from rpgai import metrics, tracing
from rpgai.db_outage import CLOSE_TRY_AGAIN
from rpgai.errors import DATABASE_UNAVAILABLE, DomainError
from rpgai.request_id import reset_request_id, set_request_id

from . import auth, backpressure, hub, throttle
from . import services as presence
from .messages import (
    MESSAGE_MODELS,
    GmDirection,
    Hello,
    Ping,
    PlayerAction,
    Roll,
    Whisper,
    XCard,
)

log = logging.getLogger(__name__)

# A seam for tests (tests/test_kick_race.py): when set, awaited in `connect` between the
# membership read and the group join, the window in which a kick or a logout would
# otherwise go unheard. Always None in production; tests set it with monkeypatch.
before_group_join: Callable[[CampaignConsumer], Awaitable[None]] | None = None

# The client messages traced (`ws.action`): those that append events.
TRACED_MESSAGES = frozenset(
    {
        "client.player_action",
        "client.whisper",
        "client.roll",
        "client.gm_direction",
        "client.x_card",
    }
)

# (event loop, campaign) -> the broadcast of its presence waiting to go out from here.
_presence_pending: dict[tuple[int, str], asyncio.Task[None]] = {}


async def _presence_broadcast_later(layer: Any, campaign_id: str, group: str, key: Any) -> None:
    try:
        await asyncio.sleep(settings.PRESENCE_COALESCE_SECONDS)
        # Read when sent, not when asked: the list includes every join and leave so far.
        _presence_pending.pop(key, None)
        users = await database_sync_to_async(presence.presence_list)(campaign_id=campaign_id)
        await layer.group_send(group, {"type": "room.presence", "users": users})
    except Exception:
        _presence_pending.pop(key, None)
        log.warning("presence broadcast for campaign %s failed", campaign_id, exc_info=True)


# Error codes a client may see (CONTRACTS §3, and `archived`: the campaign is read-only,
# docs/contract-extensions.md); any other domain code is sent as invalid_message, its
# detail saying what was wrong.
CONTRACT_ERROR_CODES = frozenset(
    {"invalid_message", "too_large", "rate_limited", "forbidden", "budget_exceeded", "archived"}
)
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_SLOW = backpressure.CLOSE_TOO_SLOW  # 4408: fell too far behind; reconnect
# The database is unavailable and this socket cannot start streaming: reconnect later
# (rpgai.db_outage.CLOSE_TRY_AGAIN, 4503, also sent before a consumer exists).


class _SocketGone(Exception):
    """The socket closed while a frame waited for room in its write buffer."""


class CampaignConsumer(AsyncWebsocketConsumer):
    membership: Membership | None = None
    gate: backpressure.WriteGate | None = None
    viewer: selectors.Viewer
    campaign_id: str
    group: str = ""
    login_group: str = ""
    ready: bool = False
    last_sent: int = 0
    last_touch: float = 0.0
    presence_shown: list[dict[str, Any]] | None = None  # the last presence list sent
    # The narration streaming now: its turn and how many characters this socket was sent.
    stream_turn: str = ""
    stream_sent: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One thing at a time, as Channels' dispatch loop has always done: the client's
        # messages and the hub's (below) take turns under this lock.
        self._turn = asyncio.Lock()
        # What the hub handed this socket that is not handled yet (realtime.hub `attach`):
        # bounded; past the bound the socket is closed with 4408 (`_fall_behind`).
        self._waiting = hub.BoundedQueue(*hub.queue_bounds())
        self._draining: asyncio.Task[None] | None = None
        self._behind = False

    # --- Connection ----------------------------------------------------------------------

    async def connect(self) -> None:
        self.campaign_id = str(self.scope["url_route"]["kwargs"]["campaign_id"])
        # Accept first: a close before accept is an HTTP 403 the browser sees as 1006,
        # and clients need the 4401/4403 codes to tell "log in" from "not yours".
        await self.accept()
        self.gate = backpressure.gate_of(self.scope)
        attach = getattr(self.channel_layer, "attach", None)
        if attach is not None:
            attach(self.channel_name, self)  # the hub hands this socket its messages
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        try:
            membership = await database_sync_to_async(selectors.membership_get)(
                campaign_id=self.campaign_id, user_id=user.id
            )
            if membership is None:
                await self.close(code=CLOSE_FORBIDDEN)
                return
            if before_group_join is not None:
                await before_group_join(self)
            self.group = selectors.group_name(self.campaign_id)
            self.login_group = self._login_group(user.id)
            await self.channel_layer.group_add(self.group, self.channel_name)
            await self.channel_layer.group_add(self.login_group, self.channel_name)
            # Listening now: anything that ended this socket's right to be here before
            # this point is seen by this read, anything after by the group messages.
            refused = await database_sync_to_async(self._refusal_now)(user.id)
            if refused is not None:
                await self._leave_groups()
                await self.close(code=refused)
                return
            self.membership = membership
            metrics.websocket_opened()
            self.viewer = selectors.Viewer.of(membership)
            await database_sync_to_async(presence.presence_enter)(
                channel_name=self.channel_name, membership=membership
            )
            self.last_touch = time.monotonic()
            await self._broadcast_presence()
            await self._recheck_round()
        except (OperationalError, InterfaceError) as exc:
            # Accepted already, so rpgai.db_outage cannot answer for us: try again later.
            log.warning("database unavailable as a socket opened; closing with 4503: %s", exc)
            if self.membership is None:
                await self._leave_groups()
            await self.close(code=CLOSE_TRY_AGAIN)

    def _login_group(self, user_id: uuid.UUID) -> str:
        """The group told when this socket's login ends (realtime.services)."""
        if self.scope.get("token_exp") is not None:
            return presence.user_tokens_group(user_id)
        return presence.session_group(self.scope["session"].session_key or "")

    def _refusal_now(self, user_id: uuid.UUID) -> int | None:
        """The close code if this socket may not stay (sync: two small reads at connect,
        never per message): its login ended (4401) or its membership did (4403). A
        logged-out session is one its store no longer has (the database backend, ours;
        the signed-cookie backend could not say, and is not supported here)."""
        iat = self.scope.get("token_iat")
        if self.scope.get("token_exp") is not None:
            if iat is not None and presence.token_revoked(user_id=user_id, issued_at=iat):
                return CLOSE_UNAUTHENTICATED
        else:
            session = self.scope["session"]
            if not session.session_key or not session.exists(session.session_key):
                return CLOSE_UNAUTHENTICATED
        if not selectors.member_exists(campaign_id=self.campaign_id, user_id=user_id):
            return CLOSE_FORBIDDEN
        return None

    async def _leave_groups(self) -> None:
        for group in (self.group, self.login_group):
            if group:
                await self.channel_layer.group_discard(group, self.channel_name)

    async def disconnect(self, code: int) -> None:
        if self.membership is None:
            return
        metrics.websocket_closed()
        await self._leave_groups()
        try:
            await database_sync_to_async(presence.presence_leave)(channel_name=self.channel_name)
            await self._broadcast_presence()
            await self._recheck_round()
        except (OperationalError, InterfaceError) as exc:
            # The row goes stale and drops out of the list (PRESENCE_TTL_SECONDS).
            log.warning("database unavailable as a socket closed: %s", exc)
        self.membership = None
        self._waiting.clear()  # nothing more is sent to it

    # --- Client messages -----------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.membership is None:
            return
        if auth.token_expired(self.scope):
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        allowed = await throttle.ws_message_allowed(
            connection=self, user_id=self.membership.user_id, campaign_id=self.campaign_id
        )
        if not allowed.allowed:
            hint = throttle.action_id_hint(text_data)
            # A refused action is said so in words its sender reads (the page sends it
            # again after `retry_after`), never dropped without a word.
            await self.send_error(
                "rate_limited",
                throttle.action_refused_detail(allowed) if hint else allowed.detail,
                action_id=hint,
                retry_after=round(max(allowed.retry_after, 0.1), 1),
            )
            return
        size = (
            len(bytes_data)
            if bytes_data is not None
            else len((text_data or "").encode("utf-8", "surrogatepass"))
        )
        if size > settings.WS_MAX_MESSAGE_BYTES:
            await self.send_error(
                "too_large", f"messages are limited to {settings.WS_MAX_MESSAGE_BYTES} bytes"
            )
            return
        if bytes_data is not None:
            await self.send_error("invalid_message", "send JSON text frames, not binary")
            return
        try:
            data = json.loads(text_data or "")
        except (ValueError, RecursionError):
            await self.send_error("invalid_message", "the message is not valid JSON")
            return
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            await self.send_error("invalid_message", "a message is a JSON object with a type")
            return
        model = MESSAGE_MODELS.get(data["type"])
        action_id = data.get("action_id") if isinstance(data.get("action_id"), str) else None
        if model is None:
            await self.send_error("invalid_message", f"unknown message type {data['type'][:40]!r}")
            return
        try:
            message = model.model_validate(data)
        except ValidationError as exc:
            await self.send_error("invalid_message", _describe(exc), action_id=action_id)
            return
        request_id = uuid.uuid4().hex
        bound = set_request_id(request_id)  # log lines, and the tasks this message queues
        try:
            with self._trace(data["type"]):
                handler = getattr(self, "on_" + data["type"].removeprefix("client."))
                await handler(message, request_id)
        except DomainError as exc:
            code = exc.code if exc.code in CONTRACT_ERROR_CODES else "invalid_message"
            await self.send_error(code, exc.detail, action_id=action_id, **_answering(data["type"]))
        except Ratelimited as exc:  # the X-card's limit per campaign
            retry_after = getattr(exc, "retry_after", 60)
            await self.send_error(
                "rate_limited",
                f"the X-card was just used; it can be used again in {retry_after} s",
                retry_after=retry_after,
                **_answering(data["type"]),
            )
        except (OperationalError, InterfaceError) as exc:
            # The database is down or restarting: a clear answer, the socket stays open,
            # and the same action (same action_id) may be sent again. Once the database
            # is back, the next message gets a new connection (CONN_HEALTH_CHECKS).
            log.warning("message %s in campaign %s: %s", data["type"], self.campaign_id, exc)
            await self.send_error(
                "unavailable",
                DATABASE_UNAVAILABLE,
                action_id=action_id,
                **_answering(data["type"]),
            )
            if data["type"] == "client.hello":
                # Without its backlog this socket would stay open and never stream: close
                # it, and the client reconnects with its last_seq (as after any drop).
                await self.close(code=CLOSE_TRY_AGAIN)
        except _SocketGone:
            raise  # nothing more can be said to it (dispatch ends it)
        except Exception:
            log.exception("message %s failed in campaign %s", data["type"], self.campaign_id)
            await self.send_error(
                "internal_error",
                "the server failed; try again",
                action_id=action_id,
                **_answering(data["type"]),
            )
        finally:
            reset_request_id(bound)

    def _trace(self, message_type: str) -> AbstractContextManager[Any]:
        """The root span of a message that changes the room (not hello, not ping): the turn
        and the speech it causes are in its trace (rpgai/tracing.py)."""
        if message_type not in TRACED_MESSAGES:
            return nullcontext()
        return tracing.span("ws.action", message_type=message_type, campaign_id=self.campaign_id)

    async def on_hello(self, message: Hello, request_id: str) -> None:
        self.ready = False
        version = await self._current_version()
        self.last_sent = min(message.last_seq, version)
        await self._send_missing(through_seq=version)
        # A narration streaming now: the whole text so far, then the live deltas go on
        # from there (room_delta). A fresh page (or one back from a drop) had none of it.
        self.stream_turn, self.stream_sent = "", 0
        so_far = await database_sync_to_async(narration_so_far_get)(campaign_id=self.campaign_id)
        if so_far is not None and so_far["text"]:
            await self._send_delta(so_far["turn_id"], so_far["text"], 0)
        self.ready = True
        ready: dict[str, Any] = {"type": "server.ready", "seq": self.last_sent}
        dm = await database_sync_to_async(_dm_named)(self.campaign_id)
        if dm is not None:
            ready["dm"] = dm
        await self.send_json(ready)
        users = await database_sync_to_async(presence.presence_list)(campaign_id=self.campaign_id)
        await self._send_presence(users)

    async def on_player_action(self, message: PlayerAction, request_id: str) -> None:
        event, waiting = await database_sync_to_async(_action_submit)(
            self.membership, message, request_id
        )
        ack: dict[str, Any] = {
            "type": "server.ack",
            "action_id": str(message.action_id),
            "seq": event.seq,
        }
        if waiting:
            # Taken, but the DM has not answered this player's earlier actions yet: they
            # are told, instead of wondering why nothing happens.
            ack["waiting"] = waiting
            ack["notice"] = throttle.action_waiting_detail(waiting)
        await self.send_json(ack)

    async def on_gm_direction(self, message: GmDirection, request_id: str) -> None:
        """A GM's direction to the DM (CONTRACTS §7); refused (`forbidden`) for players."""
        event = await database_sync_to_async(services.gm_direction_give)(
            membership=self.membership,
            text=message.text,
            secret=message.secret,
            now=message.now,
            request_id=request_id,
        )
        await self.send_json({"type": "server.ack", "seq": event.seq})

    async def on_whisper(self, message: Whisper, request_id: str) -> None:
        event = await database_sync_to_async(whisper_send)(
            membership=self.membership, to=message.to, text=message.text, request_id=request_id
        )
        await self.send_json({"type": "server.ack", "seq": event.seq})

    async def on_roll(self, message: Roll, request_id: str) -> None:
        """A player's own roll with the server's dice; the room sees it as events (a
        private one: the roller and the GMs only). Acked with the roll's seq when the
        client gave the roll an `action_id`."""
        events = await database_sync_to_async(roll_make)(
            campaign_id=self.campaign_id,
            formula=message.formula,
            reason=message.reason,
            requested_by="player",
            actor_kind="gm" if self.membership.is_gm else "player",
            actor_user_id=self.membership.user_id,
            request_id=request_id,
            dc=message.dc,
            private=message.private,
            roll_id=message.roll_id,
        )
        if message.action_id is not None:
            await self.send_json(
                {"type": "server.ack", "action_id": str(message.action_id), "seq": events[-1].seq}
            )

    async def on_x_card(self, message: XCard, request_id: str) -> None:
        """The X-card (CONTRACTS §7): `x_card` with actor system, and a turn that steers
        away from the scene starts. Who tapped it is not stored, nor logged here; the ack
        carries the event's seq, sent to this socket alone."""
        event = await database_sync_to_async(services.x_card_tap)(membership=self.membership)
        # `for`: which message this answers (the room page matches its X-card on it).
        await self.send_json({"type": "server.ack", "seq": event.seq, "for": "x_card"})

    async def on_ping(self, message: Ping, request_id: str) -> None:
        await self.send_json({"type": "server.pong"})
        if time.monotonic() - self.last_touch > settings.PRESENCE_TOUCH_SECONDS:
            self.last_touch = time.monotonic()
            await database_sync_to_async(presence.presence_touch)(channel_name=self.channel_name)
            # Members whose server process died leave no "left" behind: their rows only
            # go stale. Each socket re-reads the list as it touches its own row, so such a
            # ghost leaves every page within PRESENCE_TTL_SECONDS + a ping or two.
            users = await database_sync_to_async(presence.presence_list)(
                campaign_id=self.campaign_id
            )
            if self.ready and users != self.presence_shown:
                await self._send_presence(users)

    # --- Group messages ------------------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch (the client's frames, and group messages from a layer other
        than the hub), in turn with the hub's messages, less a thread hop per group
        message: Channels closes stale database connections before every message
        (`aclose_old_connections`, a round trip through the one thread that serves
        `database_sync_to_async`); for a room message that is one hop per socket per
        event, and 200 sockets at 50 events/s queued 10,000 hops a second behind each
        other (issue 21). Every database call here goes through `database_sync_to_async`,
        which closes stale connections itself; the hop is kept for the client's frames."""
        async with self._turn:
            if message["type"].startswith("websocket."):
                await aclose_old_connections()
            await self._handle(message)

    async def _handle(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        try:
            await handler(message)
        except _SocketGone:
            await self._end(CLOSE_TOO_SLOW)

    # --- The hub's messages (realtime.hub `attach`) ----------------------------------------

    def offer(self, message: dict[str, Any], size: int) -> None:
        """A message from the hub, called as it arrives, for every socket of the process in
        turn: it must not wait. Committed events are sent there and then when nothing else
        is under way here and the socket's buffer has room (the path nearly every event
        takes); anything else waits in order in `_waiting` for `_drain`."""
        if self._behind:
            return
        if not self._waiting and not self._turn.locked() and self._send_now(message):
            return
        if not self._waiting.put(message, size):
            self._fall_behind()
            return
        if self._draining is None or self._draining.done():
            self._draining = asyncio.ensure_future(self._drain())

    def _send_now(self, message: dict[str, Any]) -> bool:
        """`campaign_events` done synchronously when it needs nothing but writes: the
        events continue this socket's stream, none ends or changes its membership, and
        the buffer has room. False (nothing done) otherwise: the message is queued."""
        gate = self.gate
        if (
            message.get("type") != hub.EVENTS
            or not self.ready
            or self.membership is None
            or gate is None
            or gate.paused
            or gate.closed
        ):
            return False
        events, texts = message["events"], message.get("event_texts")
        frames = message.get("event_frames")
        if not (isinstance(texts, list) and isinstance(frames, list)):
            return False  # not from the hub
        if not len(texts) == len(frames) == len(events):
            return False
        new = [i for i, e in enumerate(events) if e["seq"] > self.last_sent]
        if not new:
            return True  # sent already
        expected = self.last_sent + 1
        for i in new:
            if events[i]["seq"] != expected or events[i]["type"] in (
                "player_left",
                "gm_role_handed",
            ):
                return False  # a gap to read, or a membership to re-read: the slow way
            expected += 1
        for i in new:
            self.last_sent = events[i]["seq"]
            if selectors.event_visible(events[i]["visibility"], self.viewer):
                gate.write(texts[i], frames[i])
        return True

    async def _drain(self) -> None:
        """Handle what waits in `_waiting`, in order, each in its turn."""
        while self._waiting:
            async with self._turn:
                if not self._waiting:
                    break
                message = self._waiting.pop()
                try:
                    await self._handle(message)
                except Exception:
                    log.exception("room message %s failed", message.get("type"))

    def _fall_behind(self) -> None:
        """This socket has more waiting than `ROOM_SOCKET_QUEUE_*` allow (its client reads
        too slowly): close it now with 4408 (its client reconnects and catches up from its
        last seq), though this consumer may itself be waiting on that client in `_write`.
        What waited is dropped at once."""
        self._behind = True
        self._waiting.clear()
        log.warning(
            "a socket in campaign %s fell too far behind; closing it with %d",
            self.campaign_id,
            CLOSE_TOO_SLOW,
        )
        if self.gate is not None:
            self.gate.close(CLOSE_TOO_SLOW, backpressure.too_slow_close_seconds())
        self._waiting.put({"type": hub.BEHIND}, 0)
        if self._draining is None or self._draining.done():
            self._draining = asyncio.ensure_future(self._drain())

    async def campaign_events(self, message: dict[str, Any]) -> None:
        """Committed events; delivered in seq order with any gap read from the database."""
        if self.membership is None:
            return
        if not self.ready:
            # Not yet streaming, but a removal still ends the connection at once.
            user_id = str(self.membership.user_id)
            if any(
                e["type"] == "player_left" and e["payload"].get("user_id") == user_id
                for e in message["events"]
            ):
                await self._removed()
            return
        events = message["events"]
        if events[-1]["seq"] <= self.last_sent:
            return
        if events[0]["seq"] > self.last_sent + 1 and not any(
            e["seq"] == self.last_sent + 1 for e in events
        ):
            await self._send_missing(through_seq=events[-1]["seq"])
            return
        # The frames the hub made once for every socket of this process (realtime.hub);
        # other layers have none, and each socket makes its own.
        texts = message.get("event_texts")
        if not isinstance(texts, list) or len(texts) != len(events):
            texts = [None] * len(events)
        for envelope, text in zip(events, texts, strict=True):
            if envelope["seq"] <= self.last_sent:
                continue
            if envelope["seq"] > self.last_sent + 1:
                await self._send_missing(through_seq=events[-1]["seq"])
                return
            await self._deliver(envelope, text)

    async def hub_behind(self, message: dict[str, Any]) -> None:
        """This socket fell too far behind (`_fall_behind`): end it; the client catches up
        from its last seq."""
        await self._end(CLOSE_TOO_SLOW)

    async def hub_resync(self, message: dict[str, Any]) -> None:
        """The hub's Redis subscription came back after a loss: what was published meanwhile
        is gone. The end of a membership or login is read again, and the events missed
        are read from the database."""
        if self.membership is None:
            return
        refused = await database_sync_to_async(self._refusal_now)(self.membership.user_id)
        if refused is not None:
            await self._end(refused)
            return
        if self.ready:
            await self._send_missing(through_seq=await self._current_version())

    async def auth_ended(self, message: dict[str, Any]) -> None:
        """The session this socket came in with was logged out (on any process)."""
        await self._end(CLOSE_UNAUTHENTICATED)

    async def auth_tokens_revoked(self, message: dict[str, Any]) -> None:
        """An API logout of this user: tokens issued until then no longer hold a socket."""
        iat = self.scope.get("token_iat")
        if iat is not None and iat <= message["issued_through"]:
            await self._end(CLOSE_UNAUTHENTICATED)

    async def room_presence(self, message: dict[str, Any]) -> None:
        if self.ready and message["users"] != self.presence_shown:
            await self._send_presence(message["users"])

    async def room_delta(self, message: dict[str, Any]) -> None:
        """A piece of the narration streaming now (orchestrator.streaming): sent on from
        where this socket is, never twice, a missed piece filled in from what is kept."""
        if not self.ready:
            return
        turn_id, text, offset = message["turn_id"], message["text"], message.get("offset")
        if not isinstance(offset, int):  # a sender that does not say where it is
            await self.send_json({"type": "narration.delta", "turn_id": turn_id, "text": text})
            return
        sent = self.stream_sent if turn_id == self.stream_turn else 0
        end = offset + len(text)
        if end <= sent:
            return  # sent already (with the text so far at hello)
        if offset > sent:
            # A piece this socket never got (the channel layer dropped it, or it came in
            # mid-turn): what is kept has everything sent to the room so far.
            so_far = await database_sync_to_async(narration_so_far_get)(
                campaign_id=self.campaign_id
            )
            if so_far is not None and so_far["turn_id"] == turn_id and len(so_far["text"]) >= end:
                await self._send_delta(turn_id, so_far["text"][sent:], sent)
                return
            # Not kept any more: the piece as it came (the page marks the gap).
        await self._send_delta(turn_id, text[max(0, sent - offset) :], max(sent, offset))

    async def room_round_waiting(self, message: dict[str, Any]) -> None:
        """Rounds mode: whom the table waits for (orchestrator.rounds); ephemeral."""
        if self.ready:
            await self.send_json(
                {
                    "type": "round_waiting",
                    "user_ids": message["user_ids"],
                    "deadline": message.get("deadline"),
                }
            )

    async def room_audio(self, message: dict[str, Any]) -> None:
        """A sentence of the narration streaming now, spoken already (voice.services,
        issue 23): `narration.audio`, ephemeral like the deltas, sent only to those its
        visibility names (the streamed narration is the public one; GMs hear all)."""
        if self.ready and selectors.event_visible(
            message.get("visibility") or {"kind": "all"}, self.viewer
        ):
            await self.send_json(
                {
                    "type": "narration.audio",
                    "turn_id": message["turn_id"],
                    "segment": message["segment"],
                    "text": message["text"],
                    "url": message["url"],
                    "duration_ms": message["duration_ms"],
                }
            )

    # --- Helpers -------------------------------------------------------------------------

    async def _send_delta(self, turn_id: str, text: str, offset: int) -> None:
        """`narration.delta` {turn_id, text, offset}: `offset` is how much of the turn's
        narration came before `text` (0: it starts the narration, so a page shows it from
        the start instead of adding to what it had)."""
        if not text:
            return
        self.stream_turn, self.stream_sent = turn_id, offset + len(text)
        await self.send_json(
            {"type": "narration.delta", "turn_id": turn_id, "text": text, "offset": offset}
        )

    async def _deliver(self, envelope: dict[str, Any], text: str | None = None) -> None:
        self.last_sent = envelope["seq"]
        if selectors.event_visible(envelope["visibility"], self.viewer):
            await self._write(text if text is not None else hub.event_frame(envelope))
        if (
            envelope["type"] == "player_left"
            and self.membership is not None
            and envelope["payload"]["user_id"] == str(self.membership.user_id)
        ):
            await self._removed()
        elif self._my_role_changed(envelope):
            await self._role_changed()

    def _my_role_changed(self, envelope: dict[str, Any]) -> bool:
        """A `gm_role_handed` to or from this socket's member: its role is read again."""
        if envelope["type"] != "gm_role_handed" or self.membership is None:
            return False
        payload = envelope["payload"]
        mine = str(self.membership.user_id)
        return mine in (payload.get("from_user_id"), payload.get("to_user_id"))

    async def _role_changed(self) -> None:
        """The GM role changed hands: this socket serves the member's new role from the next
        event on (a new GM sees GM-only events, a former GM no longer does)."""
        membership = await database_sync_to_async(selectors.membership_get)(
            campaign_id=self.campaign_id, user_id=self.membership.user_id
        )
        if membership is None:
            return  # they are gone: their own player_left closes this socket
        self.membership = membership
        self.viewer = selectors.Viewer.of(membership)
        await database_sync_to_async(presence.presence_enter)(
            channel_name=self.channel_name, membership=membership
        )
        await self._broadcast_presence()

    async def _removed(self) -> None:
        """This member left or was kicked (on whichever process): stop serving them now."""
        await self._end(CLOSE_FORBIDDEN)

    async def _end(self, code: int) -> None:
        """Stop serving this socket at once: later messages are ignored, then it closes."""
        if self.membership is None:
            return
        await self.disconnect(code)
        await self.close(code=code)

    async def _send_missing(self, *, through_seq: int) -> None:
        while self.last_sent < through_seq:
            page = await database_sync_to_async(_envelopes_after)(
                self.campaign_id, self.last_sent, through_seq, self.viewer
            )
            for envelope in page:
                await self.send_json({"type": "event", "event": envelope})
                if self._my_role_changed(envelope):
                    # What comes after it was read for the old role: read it again.
                    self.last_sent = envelope["seq"]
                    await self._role_changed()
                    break
            else:
                # Events this viewer may not see still move the watermark on.
                self.last_sent = (
                    page[-1]["seq"] if len(page) == selectors.EVENTS_PAGE_MAX else through_seq
                )

    async def _current_version(self) -> int:
        snapshot = await database_sync_to_async(selectors.snapshot_get)(
            campaign_id=self.campaign_id
        )
        return snapshot.version if snapshot else 0

    async def _recheck_round(self) -> None:
        """A player came or went: a round-based campaign re-checks its open round
        (rounds.py). Only players are waited for, so GMs and others change nothing."""
        if self.membership is None or self.membership.role != Membership.Role.PLAYER:
            return
        from orchestrator.rounds import round_recheck

        await database_sync_to_async(round_recheck)(campaign_id=self.campaign_id)

    async def _send_presence(self, users: list[dict[str, Any]]) -> None:
        self.presence_shown = users
        await self.send_json({"type": "presence", "users": users})

    async def _broadcast_presence(self) -> None:
        """Tell the room who is online, soon: joins and leaves on this process within
        PRESENCE_COALESCE_SECONDS make one broadcast. Without it a crowd coming in costs
        n broadcasts of an n-long list to n sockets (200 spectators: 40,000 messages)."""
        key = (id(asyncio.get_running_loop()), self.campaign_id)
        pending = _presence_pending.get(key)
        if pending is not None and not pending.done():
            return
        _presence_pending[key] = asyncio.create_task(
            _presence_broadcast_later(self.channel_layer, self.campaign_id, self.group, key)
        )

    async def send_json(self, content: dict[str, Any]) -> None:
        await self._write(json.dumps(content, ensure_ascii=False))

    async def _write(self, text: str) -> None:
        """Send one frame, once the socket's write buffer has room (realtime.backpressure):
        a client that stops reading stops this socket here, and what it has not read waits
        in `_waiting` (bounded) instead of in daphne's memory."""
        gate = self.gate
        if gate is None:
            await self.send(text_data=text)
            return
        if (gate.paused or gate.closed) and not await gate.writable():
            raise _SocketGone
        if not gate.write(text):
            raise _SocketGone

    async def send_error(
        self, code: str, detail: str, *, action_id: str | None = None, **extra: Any
    ) -> None:
        error: dict[str, Any] = {"type": "error", "code": code, "detail": detail, **extra}
        if action_id and len(action_id) <= 64 and action_id.isprintable():
            # Echoed only when sane: a lone surrogate could not even be sent as UTF-8.
            error["action_id"] = action_id
        await self.send_json(error)


def _answering(message_type: str) -> dict[str, str]:
    """`for` on an error that answers a message sent with no id of its own (the X-card):
    the client knows which of its messages was refused."""
    return {"for": "x_card"} if message_type == "client.x_card" else {}


def _dm_named(campaign_id: str) -> dict[str, str] | None:
    """The DM's provider and model as a turn of this campaign resolves them now (the GM's
    DM settings, else the server's DM_MODEL_PROVIDER / DM_MODEL), for `server.ready`:
    clients name the model. None when the settings name no usable model."""
    from llm.adapters import ModelError, adapter_for
    from orchestrator.selectors import dm_config_get

    config = dm_config_get(campaign_id=campaign_id)
    try:
        adapter = adapter_for(provider=config.provider, model=config.model)
    except ModelError:
        return None
    return {"provider": str(adapter.provider), "model": str(adapter.model)}


def _action_submit(
    membership: Membership, message: PlayerAction, request_id: str
) -> tuple[Any, int]:
    """The action's event, and how many earlier actions of its sender are unanswered."""
    event = services.player_action_submit(
        membership=membership,
        action_id=message.action_id,
        text=message.text,
        request_id=request_id,
    )
    waiting = selectors.player_actions_waiting(
        campaign_id=membership.campaign_id, user_id=membership.user_id, before_seq=event.seq
    )
    return event, waiting


def _envelopes_after(
    campaign_id: str, after_seq: int, through_seq: int, viewer: selectors.Viewer
) -> list[dict[str, Any]]:
    events = selectors.events_after(
        campaign_id=campaign_id,
        after_seq=after_seq,
        through_seq=through_seq,
        viewer=viewer,
        limit=selectors.EVENTS_PAGE_MAX,
    )
    return selectors.event_envelopes(events, campaign_id=campaign_id)


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "message"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
