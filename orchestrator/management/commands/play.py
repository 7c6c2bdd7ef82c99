"""`manage.py play CAMPAIGN [--user NAME] [--url URL]`: join a campaign's room from the
terminal, as a member like any browser.

The command finds the campaign and the member in this project's database, makes the
member a JWT access token (signed with this project's JWT_SIGNING_KEY, as
`POST /api/auth/token` would), and hands over to the room's WebSocket client
(the orchestrator/terminal package), which connects to a running server (`make run`) at --url.
Everyone's actions, rolls and narrations show as they happen; a number picks an option;
`/help` lists the commands. Log lines go to --log-file, never onto the screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from campaigns import selectors as campaign_selectors
from campaigns.models import Campaign

from ... import terminal
from ...selectors import dm_config_get

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_HISTORY = 40


class Command(BaseCommand):
    help = (
        "Play a campaign in the terminal: join its room on a running server (--url) as a "
        "member, see everyone's actions and the DM's narration live, pick options by number."
    )
    stealth_options = ("stdin",)  # a file-like object to read lines from (tests)
    # The server checks itself; the client's screen stays free of check warnings.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign", help="the campaign's id, or its exact name")
        parser.add_argument(
            "--user",
            "--as",
            dest="username",
            metavar="NAME",
            help="play as this member (their username; default: the campaign's creator)",
        )
        parser.add_argument(
            "--url",
            default=DEFAULT_URL,
            help=f"the running rpgai server to connect to (default: {DEFAULT_URL})",
        )
        parser.add_argument(
            "--history",
            type=int,
            default=DEFAULT_HISTORY,
            metavar="N",
            help=f"show the last N events of the log on arrival (default: {DEFAULT_HISTORY})",
        )
        parser.add_argument(
            "--log-file",
            metavar="PATH",
            help="write this command's log lines to PATH (default: they are dropped; "
            "nothing is logged onto the screen)",
        )

    def handle(
        self,
        *args: Any,
        campaign: str,
        username: str | None,
        url: str,
        history: int,
        log_file: str | None,
        **options: Any,
    ) -> None:
        try:
            base_url = terminal.normalized_base_url(url)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if history < 0:
            raise CommandError("--history is a number of events, 0 or more")
        if importlib.util.find_spec("websockets") is None:
            raise CommandError(
                "the websockets package is missing: install the dev extra "
                "(pip install -e '.[dev]') or websockets itself"
            )
        table = self._campaign(campaign)
        user = self._user(table, username)
        membership = campaign_selectors.membership_get(campaign_id=table.id, user_id=user.id)
        if membership is None:
            raise CommandError(f"{user.get_username()} is not a member of {table.name!r}")
        login = terminal.Login(
            base_url=base_url,
            campaign_id=str(table.id),
            user_id=str(user.id),
            display_name=membership.display_name,
            token=lambda: access_token(user),
        )
        stream = options.get("stdin")
        if stream is None and not (sys.stdin.isatty() and sys.stdout.isatty()):
            stream = sys.stdin  # a pipe or a file: read it line by line
        dm_label = dm_model_label(table.id)
        try:
            with logging_off_screen(log_file):
                asyncio.run(
                    terminal.play(
                        login,
                        dm_label=dm_label,
                        history=history,
                        stream=stream,
                        write=self._write if stream is not None else None,
                    )
                )
        except terminal.ClientError as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            pass

    def _write(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    # --- Lookups -----------------------------------------------------------------------------

    def _campaign(self, ref: str) -> Campaign:
        try:
            found = Campaign.objects.filter(id=uuid.UUID(ref)).first()
        except ValueError:
            matches = list(Campaign.objects.filter(name=ref)[:2])
            if len(matches) > 1:
                raise CommandError(f"several campaigns are named {ref!r}; use the id") from None
            found = matches[0] if matches else None
        if found is None:
            raise CommandError(f"no campaign {ref!r}")
        return found

    def _user(self, table: Campaign, username: str | None) -> Any:
        if not username:
            return table.created_by
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        if not user.is_active:
            raise CommandError(f"the account {username!r} is disabled")
        return user


def access_token(user: Any) -> str:
    """A fresh access token for `user`, as `POST /api/auth/token` gives (15 minutes; the
    client makes another when the room closes the socket for an expired one)."""
    from rest_framework_simplejwt.tokens import AccessToken

    return str(AccessToken.for_user(user))


def dm_model_label(campaign_id: Any) -> str:
    """The DM's model as the campaign's turns pick it: the GM's choice for the campaign
    (DM settings), else DM_MODEL_PROVIDER / DM_MODEL. Read with this command's settings:
    the server does not tell its clients the model, so this is right when the server runs
    with the same environment (.env) and database, as `make run` and this command do."""
    from llm.adapters import ModelError, adapter_for

    config = dm_config_get(campaign_id=campaign_id)
    try:
        adapter = adapter_for(provider=config.provider, model=config.model)
    except ModelError as exc:
        return f"not usable: {exc}"
    label = f"{adapter.model} ({adapter.provider})"
    base_url = getattr(adapter, "base_url", "") or ""
    if not base_url:
        return label
    parts = urlsplit(base_url)  # shown without any user:password@ or query in it
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return f"{label} at {urlunsplit((parts.scheme, netloc, parts.path, '', ''))}"


@contextlib.contextmanager
def logging_off_screen(log_file: str | None) -> Iterator[None]:
    """Every log line of this process to `log_file`, or nowhere, while the client runs: a
    line written to the terminal would land in the middle of the narration. Warnings
    too. The logging set up before is back afterwards (the command may run in a test)."""
    from rpgai.logging import formatter

    handler: logging.Handler
    if log_file:
        try:
            handler = logging.FileHandler(Path(log_file).expanduser(), encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write the log file {log_file}: {exc.strerror}") from None
        handler.setFormatter(formatter(json=False, colors=False))
    else:
        handler = logging.NullHandler()
    root = logging.getLogger()
    loggers = [root] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    before = [(logger, list(logger.handlers), logger.propagate) for logger in loggers]
    level = root.level
    for logger in loggers:
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)
        for logger, handlers, propagate in before:
            for kept in handlers:
                logger.addHandler(kept)
            logger.propagate = propagate
