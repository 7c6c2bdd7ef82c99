"""`manage.py play`, the terminal client: a real member of the room.

Under a pseudo-terminal, against a real daphne (fake DM), with a browser-like WebSocket
player beside it: it sees that player's action live, picks an option by number, answers
`/help` itself, rolls with `/roll`, answers the DM's roll request, whispers, names the
model, and keeps log lines off the screen. Fed by a pipe it plays a script. The command
parsing and the streamed narration's lines are checked without a server."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.core.management import CommandError, call_command

from campaigns.selectors import events_after
from orchestrator.terminal import (
    HELP,
    Quit,
    RollAsk,
    Room,
    Say,
    Send,
    command_for,
    narration_lines,
    parse_roll,
)
from tests.processes import ROOT, daphne, free_port
from tests.processes import test_env as child_env
from tests.ws import connect

SERVER_ENV = {
    "TASKS_IN_PROCESS": "1",
    "DM_MODEL_PROVIDER": "fake",
    # The narration streams in several deltas.
    "DM_FAKE_CHUNK_DELAY_SECONDS": "0.01",
    "DM_DELTA_INTERVAL_SECONDS": "0.05",
    "TTS_PROVIDER": "none",
}
WAIT = 30.0
ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][A-Za-z0-9]|\x1b[=>]")
# What a log line of ours looks like on a console (structlog's ConsoleRenderer) or as JSON.
LOG_LINE = re.compile(
    r"\[\s*(debug|info|warning|error|critical)\s*\]|\"level\":|\b(INFO|WARNING|ERROR)\b"
)


# --- A terminal --------------------------------------------------------------------------------


class Terminal:
    """A process on a pseudo-terminal: what it wrote (escapes removed), and typing."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        rows: int = 40,
        cols: int = 120,
        log_file: Path | None = None,
    ):
        self.log_file = log_file  # shown when an expectation fails
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env,
            start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.raw = b""

    def _pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.raw += os.read(self.master, 65536)
            except OSError:  # the process ended and closed its side
                time.sleep(timeout)

    @property
    def screen(self) -> str:
        return ANSI.sub(b"", self.raw).replace(b"\r", b"").decode("utf-8", "replace")

    def _failure(self, what: str) -> AssertionError:
        log = ""
        if self.log_file is not None and self.log_file.exists():
            log = f"\n--- its log ---\n{self.log_file.read_text()[-3000:]}"
        return AssertionError(f"{what}\n--- the screen ---\n{self.screen[-3000:]}{log}")

    def expect(self, wanted: str | Callable[[str], bool], timeout: float = WAIT) -> str:
        """Read until `wanted` (text, or a test of the screen) holds; the screen."""
        test = wanted if callable(wanted) else (lambda screen: wanted in screen)
        deadline = time.monotonic() + timeout
        while not test(self.screen):
            if time.monotonic() > deadline:
                raise self._failure(f"not on the screen: {wanted!r}")
            if self.proc.poll() is not None:
                self._pump(0.05)
                if not test(self.screen):
                    raise self._failure(f"exited {self.proc.returncode}")
                break
            self._pump(0.1)
        return self.screen

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")  # Enter, as a terminal sends it

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.close(self.master)


def _play_argv(campaign: Any, username: str, port: int, *extra: str) -> list[str]:
    return [
        *(sys.executable, "manage.py", "play", str(campaign.id), "--user", username),
        *("--url", f"http://127.0.0.1:{port}", *extra),
    ]


@pytest.fixture
def server() -> Iterator[int]:
    port = free_port()
    with daphne(port, **SERVER_ENV):
        yield port


@contextlib.contextmanager
def terminal(campaign: Any, username: str, port: int, log_file: Path) -> Iterator[Terminal]:
    env = child_env(
        **SERVER_ENV,
        TERM="xterm",
        # A pseudo-terminal answers no cursor-position request: prompt_toolkit is told so.
        PROMPT_TOOLKIT_NO_CPR="1",
        LOG_LEVEL="INFO",
    )
    argv = _play_argv(campaign, username, port, "--log-file", str(log_file))
    term = Terminal(argv, env, log_file=log_file)
    try:
        yield term
    finally:
        term.close()


class Browser:
    """A browser-like player on a real WebSocket; every message it gets is kept."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            self.messages.append(json.loads(raw))
            self._arrived.set()

    async def event(self, test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            while True:
                for message in self.messages:
                    if message["type"] == "event" and test(message["event"]):
                        return message["event"]
                self._arrived.clear()
                await self._arrived.wait()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def close(self) -> None:
        self._task.cancel()
        await self.ws.close()


async def _screen(term: Terminal, wanted: str | Callable[[str], bool]) -> str:
    return await asyncio.to_thread(term.expect, wanted)


def _by(user: Any, kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == kind and e["actor"].get("user_id") == str(user.id)


def _events(campaign: Any, kind: str) -> list[Any]:
    return [e for e in events_after(campaign_id=campaign.id, limit=1000) if e.type == kind]


# --- Under a pseudo-terminal, with a browser player beside it -------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_terminal_plays_live_with_a_browser_player(
    campaign, alice, bob, server, tmp_path
):
    log_file = tmp_path / "play.log"
    with terminal(campaign, "alice", server, log_file) as term:
        screen = await _screen(term, "-- live --")
        # The header names the model the DM runs on, not "default provider".
        assert "DM model: fake-dm (fake)" in screen and "default provider" not in screen
        browser = Browser(await connect(server, campaign.id, bob))
        try:
            # Bob acts in his browser: the terminal shows it as it happens, then the DM's
            # narration with its options numbered.
            tag = uuid.uuid4().hex[:6]
            action_id = str(uuid.uuid4())
            text = f"I light the lantern ({tag})"
            await browser.send(
                {"type": "client.player_action", "action_id": action_id, "text": text}
            )
            await _screen(term, f"Bob: {text}")
            acted = await browser.event(lambda e: e["payload"].get("action_id") == action_id)
            narration = await browser.event(
                lambda e: (
                    e["type"] == "dm_narration" and e["payload"]["through_seq"] >= acted["seq"]
                )
            )
            options = narration["payload"]["options"]
            assert len(options) >= 2
            numbered = "\n".join(f"  {n}. {o}" for n, o in enumerate(options, start=1))
            await _screen(term, numbered)

            # A bare number picks that option: the action sent is the option's text.
            term.type("2")
            picked = await browser.event(_by(alice, "player_action"))
            assert picked["payload"]["text"] == options[1]
            await _screen(term, f"You: {options[1]}")

            # /help is answered on the screen and never reaches the DM.
            term.type("/help")
            await _screen(term, HELP[0])

            # /roll rolls with the server's dice; the room sees it, the terminal too.
            term.type("/roll 1d20")
            roll = await browser.event(_by(alice, "roll_result"))
            assert roll["payload"]["formula"] == "1d20"
            await _screen(term, "[roll] You roll: 1d20")
        finally:
            await browser.close()
        term.type("/quit")
        await asyncio.to_thread(term.proc.wait, WAIT)
        screen = term.screen

    actions = await sync_to_async(_events)(campaign, "player_action")
    by_alice = [e for e in actions if e.actor_user_id == alice.id]
    assert [e.payload["text"] for e in by_alice] == [options[1]]
    assert not any(e.payload["text"].startswith("/") for e in actions)
    assert term.proc.returncode == 0
    # Its log lines went to the log file, none onto the screen.
    assert not [line for line in screen.splitlines() if LOG_LINE.search(line)]
    assert "connected to the room" not in screen
    assert "connected to the room" in log_file.read_text()


@pytest.mark.django_db(transaction=True)
async def test_the_terminal_answers_the_dms_roll_request_and_whispers(
    campaign, alice, bob, server, tmp_path
):
    with terminal(campaign, "alice", server, tmp_path / "play.log") as term:
        await _screen(term, "-- live --")
        browser = Browser(await connect(server, campaign.id, bob))
        try:
            # A climb: the fake DM asks the climber to roll it themselves.
            term.type("I climb the crumbling wall")
            request = await browser.event(
                lambda e: e["type"] == "roll_requested" and e["payload"].get("for_user_id")
            )
            assert request["payload"]["for_user_id"] == str(alice.id)
            await _screen(term, "The DM asks you to roll")
            term.type("/roll")
            result = await browser.event(
                lambda e: (
                    e["type"] == "roll_result"
                    and e["payload"]["roll_id"] == request["payload"]["roll_id"]
                )
            )
            assert result["actor"] == {"kind": "player", "user_id": str(alice.id)}
            assert isinstance(result["payload"]["success"], bool)  # the request's DC
            total, dc = result["payload"]["total"], result["payload"]["dc"]
            outcome = "success" if result["payload"]["success"] else "failure"
            await _screen(term, f"= {total} against DC {dc}: {outcome}")
            await browser.event(lambda e: e["type"] == "dm_narration" and e["seq"] > result["seq"])

            # A whisper by name reaches Bob alone.
            term.type("/whisper Bob meet me by the well")
            whisper = await browser.event(_by(alice, "whisper"))
            assert whisper["payload"]["text"] == "meet me by the well"
            assert whisper["payload"]["to_user_id"] == str(bob.id)
            await _screen(term, "(whisper) You to Bob: meet me by the well")
            # Bob's whisper back shows on the terminal.
            await browser.send({"type": "client.whisper", "to": str(alice.id), "text": "aye"})
            await _screen(term, "(whisper) Bob to you: aye")
        finally:
            await browser.close()


# --- Fed by a pipe ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_script_on_stdin_plays_each_line_after_the_answer_to_the_last(campaign, alice, server):
    script = "I attack the goblin\n\n2\nI pick up the silver coin\n/quit\nI never get here\n"
    done = subprocess.run(
        _play_argv(campaign, "alice", server),
        input=script,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=child_env(TTS_PROVIDER="none"),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "as Alice" in out and "You: I attack the goblin" in out
    assert "[roll] Alice attacking: 1d20" in out
    assert "gains silver coin" in out  # the change in words, not a state path
    assert out.count("What now?") >= 3 and "I never get here" not in out
    texts = [e.payload["text"] for e in _events(campaign, "player_action")]
    # "2" picked the second option of the narration that answered the attack.
    attack = next(n for n in _events(campaign, "dm_narration") if "attack" in n.payload["text"])
    assert texts == [
        "I attack the goblin",
        attack.payload["options"][1],
        "I pick up the silver coin",
    ]
    assert not any(n.payload["fallback"] for n in _events(campaign, "dm_narration"))
    assert done.stderr == ""  # nothing logged onto the screen


# --- Without a server ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_without_a_server_it_says_so_in_plain_words(campaign, alice):
    port = free_port()
    with pytest.raises(CommandError, match=f"No server answers at http://127.0.0.1:{port}"):
        call_command(
            "play", str(campaign.id), "--user", "alice", "--url", f"127.0.0.1:{port}",
            stdin=[],
        )  # fmt: skip


@pytest.mark.django_db
def test_strangers_and_unknown_campaigns_are_refused_before_connecting(campaign, make_user):
    make_user("stranger")
    with pytest.raises(CommandError, match="not a member"):
        call_command("play", str(campaign.id), "--as", "stranger", stdin=[])  # --user's alias
    with pytest.raises(CommandError, match="no campaign"):
        call_command("play", str(uuid.uuid4()), stdin=[])


# --- Typed lines and the narration's lines, without a server -----------------------------------

ME, BOB = "u-me", "u-bob"
MEMBERS = {ME: "Alice", BOB: "Bob Stone", "u-gm": "The Game Master"}


def _command(line: str, options: list[str] | None = None, asks: list[RollAsk] | None = None):
    return command_for(
        line, options=options or [], asks=asks or [], members=MEMBERS, me=ME, new_id=lambda: "id"
    )


def test_a_bare_number_picks_that_option_and_nothing_else():
    options = ["Open the door", "Run"]
    assert _command("2", options) == Send(
        "action", {"type": "client.player_action", "action_id": "id", "text": "Run"}
    )
    assert _command("3", options) == Say(["There is no option 3: pick 1 to 2."])
    assert isinstance(_command("1"), Say)  # no options open: nothing is sent
    assert _command("2 goblins charge", options).message["text"] == "2 goblins charge"


def test_commands_are_answered_here():
    assert _command("/help") == Say(HELP)
    assert _command("/quit") == Quit()
    assert (
        isinstance(_command("/dance"), Say)
        and "Unknown command /dance" in _command("/dance").lines[0]
    )
    assert _command("   ") is None
    too_long = _command("x" * 2001)
    assert isinstance(too_long, Say) and "2001" in too_long.lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("1d20+3", ("1d20+3", None, "")),
        ("1d20+3 15", ("1d20+3", 15, "")),
        ("1d20+3 dc 15 Stealth check", ("1d20+3", 15, "Stealth check")),
        ("1d20 dc12 Insight", ("1d20", 12, "Insight")),
        ("2d6 Damage", ("2d6", None, "Damage")),
        ("1d20 41", "The DC is a whole number from 1 to 40."),
        ("", "Write the dice after /roll, such as /roll 1d20+3 Stealth."),
    ],
)
def test_roll_arguments(args, expected):
    assert parse_roll(args) == expected


def test_roll_sends_a_dc_and_answers_the_dms_request():
    assert _command("/roll 1d20+3 15 Stealth").message == {
        "type": "client.roll", "formula": "1d20+3", "reason": "Stealth", "action_id": "id",
        "dc": 15,
    }  # fmt: skip
    assert _command("/gmroll 1d20").message["private"] is True
    ask = RollAsk(roll_id="r1", formula="1d20+2", reason="climbing", turn_id="t1")
    for line in ("/roll", ""):  # /roll alone, or Enter on an empty line
        assert _command(line, asks=[ask]).message == {
            "type": "client.roll", "formula": "1d20+2", "reason": "climbing", "roll_id": "r1",
            "action_id": "id",
        }  # fmt: skip


def test_whispers_go_to_a_member_by_name_or_to_the_gm():
    assert _command("/whisper bob stone meet me").message == {
        "type": "client.whisper", "to": BOB, "text": "meet me",
    }  # fmt: skip
    assert _command("/w GM I pocket the ruby").message["to"] == "gm"
    refused = _command("/whisper Carol hi")
    assert isinstance(refused, Say) and "No one here is called 'Carol'" in refused.lines[0]
    assert "Bob Stone" in refused.lines[0] and "Alice" not in refused.lines[0]


def _event(seq: int, kind: str, payload: dict, actor: dict | None = None) -> dict[str, Any]:
    return {
        "type": "event",
        "event": {
            "seq": seq, "type": kind, "payload": payload,
            "actor": actor or {"kind": "dm", "user_id": None}, "visibility": {"kind": "all"},
        },
    }  # fmt: skip


def test_a_streamed_narration_shows_whole_lines_as_they_come_and_is_not_repeated():
    room = Room(me=ME, names=dict(MEMBERS), width=40)
    words = "The rain drums on the shutters while the innkeeper polishes a cup " * 3
    shown: list[str] = []
    for i in range(0, len(words), 7):
        shown += room.on_message(
            {"type": "narration.delta", "turn_id": "t1", "text": words[i : i + 7]}, live=True
        )
    assert len(shown) > 2 and shown[0] == ""  # lines appeared before the narration was kept
    final = room.on_message(
        _event(5, "dm_narration", {"turn_id": "t1", "text": words, "options": ["Sit", "Leave"]}),
        live=True,
    )
    assert [*shown, *final][1:] == [
        *narration_lines(words, 40),
        "What now? (type a number to pick, or your own action)",
        "  1. Sit",
        "  2. Leave",
    ]
    assert room.options == ["Sit", "Leave"]
    # A late delta of a finished turn changes nothing.
    assert (
        room.on_message({"type": "narration.delta", "turn_id": "t1", "text": "x"}, live=True) == []
    )


def test_events_read_in_plain_words_without_ids():
    room = Room(me=ME, names=dict(MEMBERS), characters={"c-bob": "Thorn"})
    lines = room.on_message(
        _event(
            3,
            "state_patch_applied",
            {
                "patch_id": "p",
                "patches": [{"op": "replace", "path": "/characters/c-bob/hp", "value": 7}],
            },
        ),
        live=True,
    )
    assert lines == ["Thorn: HP 7"]
    lines = room.on_message(
        _event(
            4,
            "roll_result",
            {"roll_id": "r", "formula": "1d20+5", "total": 22, "detail": "1d20 (17) + 5 = 22",
             "dc": 15, "success": True},
            actor={"kind": "player", "user_id": BOB},
        ),
        live=True,
    )  # fmt: skip
    assert lines == ["[roll] Bob Stone rolls: 1d20 (17) + 5 = 22 against DC 15: success"]
    assert room.on_message(_event(4, "player_action", {"text": "again"}), live=True) == []
