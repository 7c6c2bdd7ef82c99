"""Backpressure for room sockets under daphne: stop writing to a client that stops reading.

What daphne does on its own (measured, docs/room.md "A slow member"): an ASGI
`websocket.send` goes straight to autobahn, which frames it and hands it to Twisted's
`transport.write`; Twisted keeps whatever the kernel will not take in the transport's
buffer, without limit, and tells no one but a registered producer. A client that stops
reading therefore makes its daphne process grow by everything sent to it until the
connection dies (autobahn's ping timeout, when the client sends nothing).

`WriteGate` is that producer (Twisted's IPushProducer, on the transport of one daphne
WebSocket): Twisted pauses it once more than 64 KiB wait in the buffer and resumes it
once the buffer is empty. The room consumer awaits `writable()` before each frame, so
that it never writes into a full buffer: what it has not written waits in its channel's
bounded queue in the hub (realtime.hub), and a socket that falls past that bound is closed
with `CLOSE_TOO_SLOW` by `close()`, from outside the consumer, which may itself be waiting
here. Per socket, the server then holds at most the hub's queue bound, Twisted's 64 KiB and
one frame.

The transport already has a producer when the room opens: daphne upgrades an HTTP
connection, and Twisted's HTTPChannel registered itself on the transport (and stops
reading from the socket while paused). The gate takes its place and passes every call on
to it, so daphne behaves as before, and the gate also knows.

Only daphne's own `send` leads to its protocol (`functools.partial(Server.handle_reply,
protocol)`, daphne 4.x); under any other server (the test suite's communicator) there is no
gate and frames are written at once, as before.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

log = logging.getLogger(__name__)

# The close code of a socket whose client fell too far behind: reconnect and catch up
# from the last seq (docs/room.md; clients treat it as any other drop).
CLOSE_TOO_SLOW = 4408

SCOPE_KEY = "rpgai.write_gate"


class WriteGate:
    """Twisted's "the buffer is full" for one daphne WebSocket, as an awaitable."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.paused = False
        self.closed = False  # the connection is gone, or we closed it
        self.attached = False
        self._previous: Any = None
        self._waiters: list[asyncio.Future[None]] = []

    def attach(self) -> bool:
        """Become the transport's producer (once the socket is accepted). False when this
        transport cannot be watched; the socket then writes without waiting."""
        if self.attached:
            return True
        transport = getattr(self.protocol, "transport", None)
        if transport is None or not hasattr(transport, "producer"):
            return False  # not a plain TCP transport (a TLS wrapper): no gate
        previous = transport.producer
        try:
            if previous is not None:
                transport.unregisterProducer()
            transport.registerProducer(self, True)
        except Exception:
            log.warning("could not watch a WebSocket's write buffer", exc_info=True)
            return False
        self._previous = previous
        self.attached = True
        return True

    # --- Twisted's IPushProducer (its names) -------------------------------------------

    def pauseProducing(self) -> None:
        self.paused = True
        if self._previous is not None:
            self._previous.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        if self._previous is not None:
            self._previous.resumeProducing()
        self._wake()

    def stopProducing(self) -> None:
        self.closed = True
        if self._previous is not None:
            self._previous.stopProducing()
        self._wake()

    # --- For the consumer ------------------------------------------------------------------

    async def writable(self) -> bool:
        """Wait until the buffer has room; False when the connection is gone (or closing)."""
        while self.paused and not self.closed:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return not self.closed

    def write(self, text: str, frame: bytes | None = None) -> bool:
        """Write one text message now (what daphne does for `websocket.send`, without the
        ASGI hops: the room's hot path); `frame` is that message already framed
        (`text_frame`), made once for every socket of the process. False, and nothing
        written, once the socket is closing or gone. Call it only when not `paused`, or
        a frame is all it adds."""
        protocol = self.protocol
        if self.closed or protocol.state != protocol.STATE_OPEN:
            return False
        if frame is not None and _plain_frames(protocol, len(frame)):
            protocol.transport.write(frame)
        else:
            protocol.serverSend(text, False)
        return True

    def close(self, code: int, handshake_seconds: float | None = None) -> None:
        """Close the socket now with `code` (the close frame goes after what is buffered),
        and release whoever waits in `writable()`."""
        if self.closed:
            return
        self.closed = True
        self._wake()
        if handshake_seconds is not None:
            # Read when the close frame is sent (autobahn's onClose timer), per connection.
            self.protocol.closeHandshakeTimeout = handshake_seconds
        try:
            self.protocol.serverClose(code=code)  # what daphne does for `websocket.close`
        except Exception:
            log.warning("closing a WebSocket failed", exc_info=True)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


def text_frame(text: str) -> bytes:
    """A whole WebSocket text message as a server sends it (RFC 6455 §5.2: FIN, opcode 1,
    no mask, no extension), the same bytes for every client: what `websockets.broadcast`
    does, and what autobahn's `sendMessage` writes when nothing below is in use."""
    payload = text.encode("utf-8")
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


def _plain_frames(protocol: Any, size: int) -> bool:
    """Whether autobahn would write exactly `text_frame`'s bytes on this connection now:
    no compression negotiated, no fragmenting or masking configured, nothing queued or half
    sent, within its size limit (past it, autobahn refuses, as before)."""
    try:
        return (
            protocol._perMessageCompress is None
            and not protocol.send_queue
            and protocol.send_state == protocol.SEND_STATE_GROUND
            and not protocol.maskServerFrames
            and not protocol.autoFragmentSize
            and not 0 < protocol.maxMessagePayloadSize < size - 2
        )
    except AttributeError:  # another autobahn: its own path
        return False


def daphne_protocol(send: Any) -> Any:
    """The daphne WebSocket protocol behind an ASGI `send`, or None."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    if getattr(send.func, "__name__", "") != "handle_reply":
        return None
    protocol = send.args[0]
    needed = ("serverClose", "serverSend", "transport", "registerProducer", "STATE_OPEN")
    return protocol if all(hasattr(protocol, name) for name in needed) else None


class WriteGates:
    """ASGI middleware (outermost, where daphne's own `send` still arrives): a WebSocket
    scope served by daphne gets its `WriteGate` under `scope["rpgai.write_gate"]`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope.get("type") == "websocket":
            protocol = daphne_protocol(send)
            if protocol is not None:
                scope = {**scope, SCOPE_KEY: WriteGate(protocol)}
        return await self.app(scope, receive, send)


def too_slow_close_seconds() -> float:
    """How long a socket closed for falling behind has to finish the close handshake before
    it is dropped (`ROOM_TOO_SLOW_CLOSE_SECONDS`; autobahn's default is 1 s): a slow client
    still reading gets time to read what was already sent and then the close code; a client
    that reads nothing holds the buffered bytes this long at most."""
    from django.conf import settings

    return float(getattr(settings, "ROOM_TOO_SLOW_CLOSE_SECONDS", 5.0))


def gate_of(scope: dict[str, Any]) -> WriteGate | None:
    """This socket's gate, attached (call after `accept`), or None (not daphne, or
    `ROOM_WRITE_GATE` off)."""
    from django.conf import settings

    if not getattr(settings, "ROOM_WRITE_GATE", True):
        return None
    gate = scope.get(SCOPE_KEY)
    if gate is None or not gate.attach():
        return None
    return gate
