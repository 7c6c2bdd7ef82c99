"""The terminal client of a campaign room (`manage.py play`): a member like any browser.

It speaks the room's WebSocket protocol (CONTRACTS §3 and §7, docs/contract-extensions.md)
with a JWT access token, so that what it does reaches every player at once and what they
do reaches it: actions, rolls, whispers, narrations (streamed as `narration.delta` comes),
who is online. Typed lines become messages: a bare number picks that option of the DM's
last narration, `/commands` are answered here and never reach the DM (`/help` lists
them), anything else is the character's action. Nothing here touches the database: the
command that starts it (orchestrator/management/commands/play.py) hands it a way to get
a token and the words for the DM's model.

Input and output run at once on one asyncio loop. On a terminal the prompt is
prompt_toolkit's (in the lock through Celery's click-repl), which keeps the line being
typed below whatever arrives; fed by a pipe or a file, each action waits for the DM's
answer before the next line is read, so that a script's "2" picks from the narration
that answered its previous line.
"""

from .client import ClientError, Login, RoomClient, normalized_base_url, play
from .commands import HELP, Quit, RollAsk, Say, Send, command_for, parse_roll
from .room import NarrationStream, Room, narration_lines

__all__ = [
    "HELP",
    "ClientError",
    "Login",
    "NarrationStream",
    "Quit",
    "RollAsk",
    "Room",
    "RoomClient",
    "Say",
    "Send",
    "command_for",
    "narration_lines",
    "normalized_base_url",
    "parse_roll",
    "play",
]
