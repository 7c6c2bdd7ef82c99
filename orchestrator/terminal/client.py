"""The connection to the room: the snapshot over HTTP, then one WebSocket at a time
(reconnecting as the room page does), the typed lines sent, the server's messages shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from .commands import Quit, Say, Who, command_for, options_lines
from .room import Room, dict_of, text_of

log = logging.getLogger(__name__)

PING_SECONDS = 25.0  # as the room page: keeps this member in the presence list
# A server just started answers its first request slowly (it imports the API then).
HTTP_TIMEOUT_SECONDS = 30.0
BACKOFF_FIRST_SECONDS, BACKOFF_MAX_SECONDS = 1.0, 15.0
# Fed by a pipe: how long one action may wait for the DM's answer before the next line.
ANSWER_WAIT_SECONDS = 180.0
CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN = 4401, 4403  # final; any other close: reconnect


class ClientError(Exception):
    """The client cannot go on; the message says why in plain words."""


@dataclass(frozen=True)
class Login:
    """Who plays, where, and how to get a fresh access token (a callable: it may be
    slow, it runs in a thread)."""

    base_url: str  # http(s)://host:port of the rpgai server
    campaign_id: str
    user_id: str
    display_name: str
    token: Callable[[], str]


def _loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def normalized_base_url(url: str) -> str:
    """ "127.0.0.1:8000" or "http://host:8000/" -> "http://host:8000"; ValueError when it
    is not an http(s) address."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// address")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


class RoomClient:
    """One member in one room over one WebSocket at a time, reconnecting as the page does.

    `write(line)` puts a line on the screen. `lines` yields what is typed (None: the end
    of input). `interactive`: a person types (else each action waits for its answer)."""

    def __init__(
        self,
        login: Login,
        *,
        write: Callable[[str], None],
        dm_label: str,
        history: int = 40,
        interactive: bool = True,
    ) -> None:
        self.login = login
        self.write = write
        self.dm_label = dm_label
        self.history = history
        self.interactive = interactive
        self.room: Room | None = None
        self.ws: Any = None
        self.live = False
        self.ever_ready = False
        self.stopping = False
        self.pending: dict[str, str] = {}  # action_id -> text, until its event arrives
        self.my_action_seqs: dict[str, int] = {}  # action_id -> its seq
        self.failed: set[str] = set()  # action ids the server refused
        self.options_shown_seq = -1
        self.changed = asyncio.Event()  # something a waiting script line may care about
        self._tasks: set[asyncio.Task[Any]] = set()  # resends in flight (kept referenced)
        self.replies: list[dict[str, Any]] = []  # a script's server.acks and errors

    # --- Screen --------------------------------------------------------------------------

    def show(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    # --- Start ---------------------------------------------------------------------------

    def _http_json(self, path: str, token: str) -> Any:
        url = self.login.base_url + path
        host = urlsplit(url).hostname
        handlers = [urllib.request.ProxyHandler({})] if _loopback(host) else []
        opener = urllib.request.build_opener(*handlers)
        request = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
        )
        base, who = self.login.base_url, self.login.display_name
        try:
            with opener.open(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            log.info("GET %s answered %s", path, exc.code)
            raise ClientError(
                {
                    401: f"The server at {base} did not accept the login made here for {who}: "
                    "it must run with the same JWT_SIGNING_KEY and database as this command.",
                    403: f"{who} is not a member of this campaign on the server at {base}.",
                    404: f"The server at {base} has no such campaign: is it using the same "
                    "database as this command?",
                    503: f"The server at {base} is unavailable for a moment (its database); "
                    "try again shortly.",
                }.get(exc.code, f"The server at {base} answered HTTP {exc.code}.")
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            log.info("GET %s failed: %r", path, exc)
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, ConnectionRefusedError):
                raise ClientError(
                    f"No server answers at {base}. Start one (`make run`, or `python manage.py "
                    "runserver`), or give its address with --url."
                ) from None
            if isinstance(reason, TimeoutError):
                raise ClientError(
                    f"The server at {base} did not answer within "
                    f"{HTTP_TIMEOUT_SECONDS:.0f} s; try again in a moment."
                ) from None
            raise ClientError(f"Cannot reach the server at {base}: {reason}.") from None
        except ValueError:
            raise ClientError(f"The server at {base} did not answer like rpgai does.") from None

    async def start(self) -> dict[str, Any]:
        """Read the snapshot over HTTP: that the server runs, takes the token, knows the
        campaign and this member; the names and options the room starts from."""
        token = await asyncio.to_thread(self.login.token)
        snapshot = await asyncio.to_thread(
            self._http_json, f"/api/campaigns/{self.login.campaign_id}/snapshot", token
        )
        state = dict_of(dict_of(snapshot).get("state"))
        me = dict_of(dict_of(state.get("members")).get(self.login.user_id))
        self.room = Room.from_snapshot(
            me=self.login.user_id, is_gm=me.get("role") == "gm", state=state
        )
        version = int(dict_of(snapshot).get("version") or 0)
        # The backlog shows the last few events; older ones count as seen.
        self.room.last_seq = max(0, version - self.history)
        return state

    # --- Run -----------------------------------------------------------------------------

    async def run(self, lines: AsyncIterator[str | None]) -> None:
        state = await self.start()
        name = text_of(dict_of(state.get("campaign")).get("name")) or "the campaign"
        self.show(
            [
                f"Playing {name!r} as {self.login.display_name} on {self.login.base_url}. "
                f"DM model: {self.dm_label}.",
                "Type an action, a number to pick an option, /help for commands, /quit to leave.",
            ]
        )
        connection = asyncio.create_task(self._connection_loop(), name="room connection")
        typing = asyncio.create_task(self._input_loop(lines), name="typed lines")
        try:
            done, _ = await asyncio.wait({connection, typing}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a ClientError from the connection ends the command with it
        finally:
            self.stopping = True
            for task in (typing, connection):
                task.cancel()
            for task in (typing, connection):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.ws is not None:
                with contextlib.suppress(Exception):
                    await self.ws.close()

    def _ws_url(self, token: str) -> str:
        parts = urlsplit(self.login.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = f"{parts.path}/ws/campaigns/{self.login.campaign_id}/"
        return urlunsplit((scheme, parts.netloc, path, f"token={token}", ""))

    async def _connection_loop(self) -> None:
        import websockets
        from websockets.exceptions import InvalidHandshake, InvalidURI

        attempt = 0
        while not self.stopping:
            token = await asyncio.to_thread(self.login.token)
            url = self._ws_url(token)
            proxy = None if _loopback(urlsplit(url).hostname) else True
            ready_here = False
            code: int | None = None
            problem = ""
            try:
                async with websockets.connect(
                    url, proxy=proxy, open_timeout=HTTP_TIMEOUT_SECONDS, max_size=2**22
                ) as ws:
                    log.info("connected to the room of campaign %s", self.login.campaign_id)
                    self.ws = ws
                    await self._send({"type": "client.hello", "last_seq": self.room.last_seq})
                    pinger = asyncio.create_task(self._ping(ws))
                    try:
                        async for raw in ws:
                            if self._on_raw(raw):
                                ready_here = True
                                attempt = 0
                    finally:
                        pinger.cancel()
                    code = ws.close_code
            except websockets.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
            except (InvalidURI, InvalidHandshake) as exc:
                problem = str(exc)
            except (OSError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            finally:
                self.ws = None
                self.live = False
            if self.stopping:
                return
            log.info("room connection ended: close code %s %s", code, problem)
            if code == CLOSE_FORBIDDEN:
                raise ClientError(
                    f"The room closed to {self.login.display_name}: not a member of this "
                    "campaign (any more)."
                )
            if code == CLOSE_UNAUTHENTICATED:
                if ready_here:
                    continue  # the token expired mid-game: at once, with a fresh one
                # Refused at the door, fresh token and all: the account is disabled, or
                # the server signs with another key.
                raise ClientError(
                    f"The server at {self.login.base_url} did not accept the login made here "
                    f"for {self.login.display_name}."
                )
            if not self.ever_ready:
                raise ClientError(
                    f"Could not join the room at {self.login.base_url}"
                    f"{f': {problem}' if problem else ''}. Is it rpgai served by daphne "
                    "(`make run`)?"
                )
            delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2**attempt)
            if attempt == 0:  # said once; "(Reconnected.)" follows when it is back
                self.show(["(Connection lost; reconnecting…)"])
            attempt += 1
            await asyncio.sleep(delay)

    async def _ping(self, ws: Any) -> None:
        while True:
            await asyncio.sleep(PING_SECONDS)
            with contextlib.suppress(Exception):
                await ws.send(json.dumps({"type": "client.ping"}))

    async def _send(self, message: dict[str, Any]) -> bool:
        if self.ws is None:
            return False
        try:
            await self.ws.send(json.dumps(message))
        except Exception as exc:  # the connection loop notices and reconnects
            log.info("send failed: %s", exc)
            return False
        return True

    def _on_raw(self, raw: str | bytes) -> bool:
        """Handle one server message; True when it is the `server.ready` of a connection."""
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("a message that is not JSON: %.200r", raw)
            return False
        if not isinstance(message, dict):
            return False
        kind = message.get("type")
        room = self.room
        if kind == "server.ready":
            if isinstance(message.get("seq"), int):
                room.last_seq = max(room.last_seq, message["seq"])
            reconnected = self.ever_ready
            self.live = self.ever_ready = True
            lines = ["(Reconnected.)"] if reconnected else ["-- live --"]
            lines += self._dm_named(message.get("dm"))
            if room.options and room.options_seq != self.options_shown_seq:
                lines += options_lines(room.options)
                self.options_shown_seq = room.options_seq
            for ask in room.asks:
                lines.append(
                    f"The DM asks you to roll {ask.formula}"
                    f"{f' for {ask.reason}' if ask.reason else ''}: type /roll."
                )
            self.show(lines)
            # Actions sent but never seen stored go again, with the same action_id: the
            # server stores each action_id once.
            for action_id in list(self.pending):
                self._tasks.add(task := asyncio.create_task(self._send_again(action_id, 0)))
                task.add_done_callback(self._tasks.discard)
            self.changed.set()
            return True
        if kind in ("server.ack", "error") and not self.interactive:
            self.replies.append(message)  # a script's line waits for its reply
        if kind == "error":
            self.show(self._on_error(message))
            self.changed.set()
            return False
        if kind == "event":
            event = dict_of(message.get("event"))
            action_id = text_of(dict_of(event.get("payload")).get("action_id"))
            if event.get("type") == "player_action" and action_id in self.pending:
                self.pending.pop(action_id, None)
                self.my_action_seqs[action_id] = int(event.get("seq") or 0)
        lines = room.on_message(message, live=self.live)
        if kind == "event" and dict_of(message.get("event")).get("type") in (
            "dm_narration",
            "dm_narration_retracted",
        ):
            self.options_shown_seq = room.options_seq if self.live else self.options_shown_seq
        self.show(lines)
        if kind in ("event", "server.ack"):
            self.changed.set()
        return False

    def _dm_named(self, dm: Any) -> list[str]:
        """The model the server says its turns run on (`server.ready`'s `dm`): said when it
        is not what the header guessed from this command's own settings."""
        dm = dict_of(dm)
        model, provider = text_of(dm.get("model")).strip(), text_of(dm.get("provider")).strip()
        if not model:
            return []
        label = f"{model} ({provider})" if provider else model
        if self.dm_label == label or self.dm_label.startswith(f"{label} at "):
            return []
        self.dm_label = label
        return [f"DM model: {label}, as the server runs it."]

    def _on_error(self, message: dict[str, Any]) -> list[str]:
        detail = text_of(message.get("detail")) or "the server refused that."
        action_id = text_of(message.get("action_id"))
        code = text_of(message.get("code"))
        if action_id in self.pending:
            if code in ("rate_limited", "unavailable"):
                wait = message.get("retry_after")
                wait = float(wait) if isinstance(wait, int | float) else 3.0
                self._tasks.add(task := asyncio.create_task(self._send_again(action_id, wait)))
                task.add_done_callback(self._tasks.discard)
                # The rate limit's words already say it goes again; an outage's do not.
                return [detail if code == "rate_limited" else f"{detail} (It goes again soon.)"]
            self.pending.pop(action_id, None)
            self.failed.add(action_id)
            return [f"Not sent: {detail}"]
        if action_id:
            self.failed.add(action_id)
        return [f"Not done: {detail}"]

    async def _send_again(self, action_id: str, wait: float) -> None:
        """A refused-for-now action goes again after the server's wait, same action_id."""
        await asyncio.sleep(min(max(wait, 0.1), 60.0))
        text = self.pending.get(action_id)
        if text is not None:
            await self._send({"type": "client.player_action", "action_id": action_id, "text": text})

    # --- Typing --------------------------------------------------------------------------

    async def _input_loop(self, lines: AsyncIterator[str | None]) -> None:
        async for line in lines:
            if line is None:
                break
            while not self.interactive and not self.live:  # a script waits for the room
                self.changed.clear()
                await self.changed.wait()
            room = self.room
            command = command_for(
                line,
                options=room.options,
                asks=room.asks,
                members=room.names,
                me=room.me,
            )
            if command is None:
                continue
            if isinstance(command, Quit):
                return
            if isinstance(command, Say):
                self.show(command.lines)
                continue
            if isinstance(command, Who):
                self.show([room.who_line()])
                continue
            if not self.live and self.interactive:
                if command.kind != "action":
                    # A roll is never sent twice by itself: it waits for no connection.
                    self.show(["Not connected right now: nothing was sent. Try again shortly."])
                    continue
                # An action waits, as on the room page: it goes once the room is live.
                self.pending[command.message["action_id"]] = command.message["text"]
                self.show(["(Not connected yet: your action goes as soon as the room is.)"])
                continue
            if command.kind == "action":
                self.pending[command.message["action_id"]] = command.message["text"]
            if command.kind == "roll" and command.message.get("roll_id"):
                room.asks = [a for a in room.asks if a.roll_id != command.message["roll_id"]]
            replies_before = len(self.replies)
            await self._send(command.message)
            if self.interactive:
                continue
            if command.kind == "action":
                await self._answered(command.message["action_id"])
            else:
                await self._replied(replies_before, command.message.get("action_id"))
        if not self.interactive:
            # The end of a script: the last answers are still worth reading.
            for action_id in list(self.my_action_seqs) + list(self.pending):
                await self._answered(action_id)

    async def _replied(self, after: int, action_id: str | None) -> None:
        """Wait for the server's answer to a roll or a whisper (the first `server.ack` or
        `error` after index `after` that is about it), then for the events it acked."""
        room = self.room

        def reply() -> dict[str, Any] | None:
            for message in self.replies[after:]:
                if message.get("action_id") == action_id:
                    return message
            return None

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HTTP_TIMEOUT_SECONDS):
                while (answer := reply()) is None or (
                    answer.get("type") == "server.ack"
                    and room.last_seq < int(answer.get("seq") or 0)
                ):
                    self.changed.clear()
                    await self.changed.wait()

    async def _answered(self, action_id: str) -> None:
        """Wait until the DM answered (or gave up on) this action, the server refused it,
        or the DM asks this member to roll (a script's next line may be `/roll`)."""
        room = self.room

        def done() -> bool:
            if action_id in self.failed or room.asks:
                return True
            seq = self.my_action_seqs.get(action_id)
            return seq is not None and room.answered_through >= seq

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ANSWER_WAIT_SECONDS):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()


# --- Typed lines -----------------------------------------------------------------------------


async def prompt_lines() -> AsyncIterator[str | None]:
    """Lines typed at a terminal, with prompt_toolkit's prompt (Ctrl-D or Ctrl-C: the end)."""
    from prompt_toolkit import PromptSession

    session: PromptSession[str] = PromptSession()
    while True:
        try:
            yield await session.prompt_async("> ")
        except (EOFError, KeyboardInterrupt):
            yield None
            return


async def stream_lines(stream: TextIO) -> AsyncIterator[str | None]:
    """Lines read from a pipe or a file, by a thread (reading never blocks the loop)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        # After /quit the loop may be gone while this thread still reads: it just stops.
        with contextlib.suppress(RuntimeError):
            try:
                for line in stream:
                    loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\r\n"))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

    # A daemon: at /quit the thread may still wait on input that never comes.
    threading.Thread(target=read, name="stdin reader", daemon=True).start()
    while True:
        line = await queue.get()
        yield line
        if line is None:
            return


async def play(
    login: Login,
    *,
    dm_label: str,
    history: int,
    stream: TextIO | None,
    write: Callable[[str], None] | None,
) -> None:
    """Run the client: at a terminal when `stream` is None (prompt_toolkit, output above
    the prompt), else reading `stream` and writing with `write`."""
    if stream is not None:
        client = RoomClient(
            login, write=write or print, dm_label=dm_label, history=history, interactive=False
        )
        await client.run(stream_lines(stream))
        return
    from prompt_toolkit.patch_stdout import patch_stdout

    with patch_stdout():
        # print() now goes through prompt_toolkit, above the line being typed.
        client = RoomClient(
            login, write=lambda line: print(line, flush=True), dm_label=dm_label, history=history
        )
        await client.run(prompt_lines())
