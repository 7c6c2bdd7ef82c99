"""The room hub: a channel layer with one Redis subscription per group per process.

`CHANNEL_LAYER=hub` (the default with Redis; docs/room.md "Fan-out"). Producers keep
calling `group_send(group, message)` (campaigns.services.broadcast_events and friends,
realtime.services for logouts): one PUBLISH on the group's Redis channel, whichever
process sends it (a web server, a Celery worker). Each process subscribes to a group's
Redis channel once, when its first local socket joins the group, and gives every message
to its own sockets: Redis carries one copy per process, not one per socket (channels-redis's
RedisChannelLayer writes one copy per socket into Redis and each socket pops its own).

Each message is decoded once per process, and a room's committed events
(`campaign.events`) also get their socket message (`{"type": "event", "event": ...}`)
made once per process, as JSON text (`event_texts`) and as a WebSocket frame
(`event_frames`), beside `events` in the message every local socket is given. The message
is shared by the process's sockets: nothing may change it.

A local channel either has a queue that its consumer reads with `receive()` (the channel
layer API), or a sink (`attach`): the room consumer takes its messages from the hub as they
arrive (`offer`), sends committed events to its client there and then when it is free to
(realtime.consumers), and keeps the rest in its own bounded queue. Either queue holds at
most `ROOM_SOCKET_QUEUE_MESSAGES` messages or `ROOM_SOCKET_QUEUE_BYTES` of their published
size; a socket past that has fallen too far behind (its client reads too slowly,
realtime.backpressure) and is closed with 4408. A slow member thus holds at most that
bound, and costs the others nothing: the hub never waits for a socket.

Delivery is at most once, as with any channel layer; the database is the record and the
consumer fills gaps from it. `group_add` returns once Redis has confirmed the
subscription, so that whatever is published after it reaches the socket (the consumer
joins, then reads its backlog). When the subscription connection is lost, redis-py
re-subscribes on reconnect; messages published meanwhile are gone, so every local member
of a re-subscribed group gets a `hub.resync` message (the consumer reads what it missed
from the database, and re-checks its membership and login).

Redis channels: `<prefix>.g.<group>` per group, `<prefix>.p.<process>` per process for
`send()` to a channel of another process (nothing in the project does; the channel layer
API has it). One Redis server, no sharding. The state is per event loop (redis-py's
connections belong to one loop): a short-lived loop (`async_to_sync` in a worker) gets a
publishing connection that closes with the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import types
import uuid
from collections import deque
from typing import Any

from channels.layers import BaseChannelLayer
from redis import asyncio as aioredis

from .backpressure import text_frame

log = logging.getLogger(__name__)

BEHIND = "hub.behind"  # this socket fell too far behind: it is closed (4408)
RESYNC = "hub.resync"  # messages may have been lost (Redis reconnected): read the database
EVENTS = "campaign.events"  # committed events: `event_texts` made once per process

# How long group_add waits for Redis to confirm a subscription.
SUBSCRIBE_TIMEOUT_SECONDS = 10.0


def event_frame(envelope: dict[str, Any]) -> str:
    """The socket frame of one committed event (CONTRACTS §3 `event`), as JSON text."""
    return json.dumps({"type": "event", "event": envelope}, ensure_ascii=False)


def _process_of(channel: str) -> str:
    """The process part of a channel name `<prefix><process>!<id>` (16 characters)."""
    head, bang, _ = channel.partition("!")
    return head[-16:] if bang else ""


def queue_bounds() -> tuple[int, int]:
    """(messages, bytes): what one socket may have waiting (settings, docs/room.md)."""
    from django.conf import settings

    return (
        int(getattr(settings, "ROOM_SOCKET_QUEUE_MESSAGES", 500)),
        int(getattr(settings, "ROOM_SOCKET_QUEUE_BYTES", 512 * 1024)),
    )


class BoundedQueue:
    """Messages waiting for one socket, at most `most` of them and `most_bytes` of their
    published size (the payload as it came from Redis; the decoded message is shared by
    the process's sockets, so this is what one lagging socket keeps alive)."""

    __slots__ = ("items", "most", "most_bytes", "size")

    def __init__(self, most: int, most_bytes: int) -> None:
        self.items: deque[tuple[dict[str, Any], int]] = deque()
        self.size = 0
        self.most, self.most_bytes = most, most_bytes

    def __len__(self) -> int:
        return len(self.items)

    def put(self, message: dict[str, Any], size: int) -> bool:
        """False, and nothing kept, when the queue is full. One message alone always fits,
        however large: a big turn is not a slow reader."""
        if self.items and (len(self.items) >= self.most or self.size + size > self.most_bytes):
            return False
        self.items.append((message, size))
        self.size += size
        return True

    def pop(self) -> dict[str, Any]:
        message, size = self.items.popleft()
        self.size -= size
        return message

    def clear(self) -> None:
        self.items.clear()
        self.size = 0


class _Inbox(BoundedQueue):
    """A local channel without a sink: its consumer reads it with `receive()`. One that
    falls behind gets one `hub.behind` message, and nothing more."""

    __slots__ = ("behind", "groups", "sink", "waiter")

    def __init__(self) -> None:
        super().__init__(*queue_bounds())
        self.waiter: asyncio.Future[None] | None = None
        self.behind = False
        self.groups: set[str] = set()
        self.sink: Any = None  # see RoomHubLayer.attach

    def deliver(self, message: dict[str, Any], size: int) -> None:
        if self.sink is not None:
            try:
                self.sink.offer(message, size)
            except Exception:
                log.exception("a socket failed to take a room message")
            return
        if self.behind:
            return
        if not self.put(message, size):
            self.behind = True
            self.clear()  # what it held is freed now
            self.items.append(({"type": BEHIND}, 0))
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self) -> dict[str, Any]:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.pop()


class RoomHubLayer(BaseChannelLayer):
    """The channel layer (CHANNEL_LAYERS BACKEND `realtime.hub.RoomHubLayer`)."""

    extensions = ["groups", "flush"]

    def __init__(self, hosts: list[Any] | None = None, prefix: str = "rpgai.hub") -> None:
        super().__init__()
        hosts = hosts or ["redis://127.0.0.1:6379/0"]
        if len(hosts) != 1:
            raise ValueError("the room hub talks to one Redis server: give one host")
        host = hosts[0]
        self.host: dict[str, Any] = dict(host) if isinstance(host, dict) else {"address": host}
        self.prefix = prefix
        self._hubs: dict[asyncio.AbstractEventLoop, _LoopHub] = {}

    # --- The event loop's hub --------------------------------------------------------------

    def _hub(self) -> _LoopHub:
        loop = asyncio.get_running_loop()
        hub = self._hubs.get(loop)
        if hub is None:
            hub = self._hubs[loop] = _LoopHub(self)
            self._close_with(loop)
        return hub

    def _close_with(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close this loop's connections when the loop closes (as channels-redis does)."""
        original = loop.close

        def close(this: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> Any:
            hub = self._hubs.pop(loop, None)
            if hub is not None and not loop.is_running() and not loop.is_closed():
                with contextlib.suppress(Exception):
                    loop.run_until_complete(hub.aclose())
            this.close = original  # type: ignore[method-assign]
            return original(*args, **kwargs)

        loop.close = types.MethodType(close, loop)  # type: ignore[method-assign]

    # --- Channel layer API -----------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific.") -> str:
        return await self._hub().new_channel(prefix)

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        return await self._hub().receive(channel)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self.require_valid_channel_name(channel)
        await self._hub().send(channel, message)

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._hub().group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._hub().group_discard(group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.require_valid_group_name(group)
        await self._hub().group_send(group, message)

    async def flush(self) -> None:
        hub = self._hubs.pop(asyncio.get_running_loop(), None)
        if hub is not None:
            await hub.aclose()

    async def close_pools(self) -> None:
        """Close this loop's connections (rpgai.health's probe does, on its own instance)."""
        await self.flush()

    # --- Beyond the API: for the room consumer ---------------------------------------------

    def attach(self, channel: str, sink: Any) -> None:
        """Hand `channel`'s messages to `sink.offer(message, size)` as they arrive, instead
        of queueing them for `receive()`. `offer` is called synchronously by the hub's
        reader, in arrival order, and must not block: the room consumer sends an event
        there and then when it is free to, and otherwise queues it itself (bounded)."""
        inbox = self._hub().inboxes.get(channel)
        if inbox is None:
            raise ValueError(f"{channel!r} is not a channel of this process")
        inbox.sink = sink

    def subscription_name(self, group: str) -> str:
        """The Redis pub/sub channel of a group (tests count its subscribers)."""
        return f"{self.prefix}.g.{group}"


class _LoopHub:
    """One event loop's side of the hub: its local channels, groups and connections."""

    def __init__(self, layer: RoomHubLayer) -> None:
        self.layer = layer
        self.process = uuid.uuid4().hex[:16]
        self.inboxes: dict[str, _Inbox] = {}
        self.groups: dict[str, set[str]] = {}  # group -> local channel names
        # group -> its subscription: done once Redis confirmed it.
        self.subscriptions: dict[str, asyncio.Task[None]] = {}
        options = dict(layer.host)
        address = options.pop("address")
        # Named, so that `CLIENT LIST` tells which process a connection serves (and tests
        # find the subscription to cut).
        options.setdefault("client_name", f"{layer.prefix}.{self.process}")
        self.pool = aioredis.ConnectionPool.from_url(address, **options)
        self.redis = aioredis.Redis(connection_pool=self.pool)
        self.pubsub: Any = None
        self.reader: asyncio.Task[None] | None = None
        # (un)subscriptions one at a time, each waiting for its confirmation: Redis answers
        # in order, so the answer awaited is the next one for that Redis channel.
        self.sub_lock = asyncio.Lock()
        self.awaited: tuple[str, bytes, asyncio.Future[None]] | None = None
        self.direct = f"{layer.prefix}.p.{self.process}"
        self.direct_ready: asyncio.Task[None] | None = None

    # --- Names ------------------------------------------------------------------------------

    def _group_channel(self, group: str) -> bytes:
        return self.layer.subscription_name(group).encode()

    def _group_of(self, name: bytes) -> str | None:
        head = f"{self.layer.prefix}.g.".encode()
        return name[len(head) :].decode() if name.startswith(head) else None

    # --- Channels ---------------------------------------------------------------------------

    async def new_channel(self, prefix: str) -> str:
        name = f"{prefix}{self.process}!{uuid.uuid4().hex}"
        self.inboxes[name] = _Inbox()
        if self.direct_ready is None:
            # This process's own Redis channel, for a `send()` from another process.
            self.direct_ready = asyncio.ensure_future(self._subscribe(self.direct.encode()))
        try:
            await asyncio.shield(self.direct_ready)
        except Exception:
            self.direct_ready = None
            del self.inboxes[name]
            raise
        return name

    def _local(self, channel: str) -> bool:
        return _process_of(channel) == self.process

    async def receive(self, channel: str) -> dict[str, Any]:
        inbox = self.inboxes.get(channel)
        if inbox is None:
            if not self._local(channel):
                raise ValueError(f"{channel!r} is not a channel of this process")
            inbox = self.inboxes[channel] = _Inbox()
        try:
            return await inbox.get()
        except asyncio.CancelledError:
            # The consumer ended (Channels cancels its receive last, and has no call to
            # delete a channel): forget the channel, as channels-redis's pub/sub layer does.
            await asyncio.shield(self._forget(channel))
            raise

    async def _forget(self, channel: str) -> None:
        inbox = self.inboxes.pop(channel, None)
        if inbox is None:
            return
        for group in list(inbox.groups):
            await self._leave(group, channel, inbox)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False).encode()
        if self._local(channel):
            inbox = self.inboxes.get(channel)
            if inbox is not None:  # a copy, as over Redis
                inbox.deliver(json.loads(data), len(data))
            return
        process = _process_of(channel)
        body = json.dumps({"channel": channel, "message": message}, ensure_ascii=False)
        await self.redis.publish(f"{self.layer.prefix}.p.{process}", body.encode())

    # --- Groups -----------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        inbox = self.inboxes.get(channel)
        if inbox is None:
            raise ValueError(f"{channel!r} is not a channel of this process")
        self.groups.setdefault(group, set()).add(channel)
        inbox.groups.add(group)
        subscribed = self.subscriptions.get(group)
        if subscribed is None:
            subscribed = self.subscriptions[group] = asyncio.ensure_future(
                self._subscribe(self._group_channel(group))
            )
        try:
            # Shielded: one socket giving up does not cancel the others' subscription.
            await asyncio.shield(subscribed)
        except Exception:
            if self.subscriptions.get(group) is subscribed:
                del self.subscriptions[group]  # the next join tries again
            await self._leave(group, channel, inbox)
            raise

    async def group_discard(self, group: str, channel: str) -> None:
        inbox = self.inboxes.get(channel)
        if inbox is not None and group in inbox.groups:
            await self._leave(group, channel, inbox)

    async def _leave(self, group: str, channel: str, inbox: _Inbox) -> None:
        inbox.groups.discard(group)
        members = self.groups.get(group)
        if members is None:
            return
        members.discard(channel)
        if members:
            return
        del self.groups[group]
        subscribed = self.subscriptions.pop(group, None)
        if subscribed is None:
            return
        try:
            await self._unsubscribe(self._group_channel(group))
        except Exception:
            # Left subscribed: its messages find no local member and are dropped.
            log.warning("unsubscribing from %s failed", group, exc_info=True)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False).encode()
        await self.redis.publish(self._group_channel(group), data)

    # --- Subscriptions ----------------------------------------------------------------------

    async def _subscribe(self, name: bytes) -> None:
        await self._confirmed("subscribe", name)

    async def _unsubscribe(self, name: bytes) -> None:
        await self._confirmed("unsubscribe", name)

    async def _confirmed(self, kind: str, name: bytes) -> None:
        async with self.sub_lock:
            if self.pubsub is None:
                self.pubsub = self.redis.pubsub()
            future = asyncio.get_running_loop().create_future()
            self.awaited = (kind, name, future)
            try:
                if kind == "subscribe":
                    await self.pubsub.subscribe(name)
                else:
                    await self.pubsub.unsubscribe(name)
                if self.reader is None or self.reader.done():
                    self.reader = asyncio.ensure_future(self._read())
                await asyncio.wait_for(future, SUBSCRIBE_TIMEOUT_SECONDS)
            finally:
                self.awaited = None

    async def _read(self) -> None:
        """The one reader of the subscription connection: messages, and the answers to
        (un)subscriptions."""
        pause = 0.1
        while True:
            try:
                message = await self.pubsub.get_message(timeout=None)
                pause = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # redis-py reconnects (and re-subscribes) on the next read.
                log.warning("room hub: Redis subscription lost (%s); again in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            if message is None:
                continue
            kind, name = message["type"], message["channel"]
            try:
                if kind == "message":
                    self._deliver(name, message["data"])
                elif kind in ("subscribe", "unsubscribe"):
                    self._answered(kind, name)
            except Exception:
                # One bad message (not ours, not JSON) must not end the only reader: every
                # room of the process would go quiet.
                log.exception("room hub: a message on %r could not be delivered", name)

    def _answered(self, kind: str, name: bytes) -> None:
        awaited = self.awaited
        if awaited is not None and awaited[0] == kind and awaited[1] == name:
            if not awaited[2].done():
                awaited[2].set_result(None)
            return
        if kind == "subscribe":
            # Not asked for: redis-py re-subscribed after a lost connection. What was
            # published meanwhile is gone: the members read it from the database.
            group = self._group_of(name)
            for channel in self.groups.get(group, ()) if group is not None else ():
                inbox = self.inboxes.get(channel)
                if inbox is not None:
                    inbox.deliver({"type": RESYNC}, 0)

    def _deliver(self, name: bytes, data: bytes) -> None:
        group = self._group_of(name)
        if group is None:
            if name == self.direct.encode():
                envelope = json.loads(data)
                inbox = self.inboxes.get(envelope["channel"])
                if inbox is not None:
                    inbox.deliver(envelope["message"], len(data))
            return
        members = self.groups.get(group)
        if not members:
            return
        message = json.loads(data)
        if message.get("type") == EVENTS and isinstance(message.get("events"), list):
            texts = [event_frame(e) for e in message["events"]]
            message["event_texts"] = texts
            message["event_frames"] = [text_frame(t) for t in texts]
        size = len(data)
        for channel in list(members):  # an offer may end a socket, and change the set
            inbox = self.inboxes.get(channel)
            if inbox is not None:
                inbox.deliver(message, size)

    # --- The end ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(BaseException):
                await self.reader
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        with contextlib.suppress(Exception):
            await self.pool.disconnect()
        self.inboxes.clear()
        self.groups.clear()
        self.subscriptions.clear()
