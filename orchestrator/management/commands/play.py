"""`manage.py play CAMPAIGN [--as USERNAME]`: play a campaign from the terminal.

Each line read from stdin is a player action: it is submitted like one from the room
(so the room sees it too), the DM turn runs right here, its narration is printed as it
streams, then the turn's rolls and changes, then the options. `/quit` or end of input
stops. For developers trying a model: `DM_MODEL_PROVIDER=openai OPENAI_BASE_URL=...`.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from campaigns import selectors as campaign_selectors
from campaigns.models import Campaign
from campaigns.services import player_action_submit
from rpgai.errors import DomainError

from ...receivers import turns_deferred
from ...selectors import dm_config_get
from ...services import turns_run_pending

WAIT_FOR_OTHER_WORKER_SECONDS = 120


class Command(BaseCommand):
    help = "Play a campaign in the terminal: type actions, read the DM's streamed narration."
    stealth_options = ("stdin",)  # a file-like object to read actions from (tests)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign", help="the campaign's id, or its exact name")
        parser.add_argument("--as", dest="username", help="play as this member (default: its GM)")

    def handle(self, *args: Any, campaign: str, username: str | None, **options: Any) -> None:
        table = self._campaign(campaign)
        user = self._user(table, username)
        membership = campaign_selectors.membership_get(campaign_id=table.id, user_id=user.id)
        if membership is None:
            raise CommandError(f"{user.get_username()} is not a member of {table.name!r}")
        config = dm_config_get(campaign_id=table.id)
        self.stdout.write(
            f"Playing {table.name!r} as {membership.display_name} "
            f"(DM: {config.provider or 'default provider'} {config.model or ''}). "
            "Type an action, /quit to stop."
        )
        self.stdout.flush()
        for line in options.get("stdin") or sys.stdin:
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            self._play(membership, text)

    # --- One action --------------------------------------------------------------------------

    def _play(self, membership: Any, text: str) -> None:
        try:
            with turns_deferred():
                action = player_action_submit(
                    membership=membership, action_id=uuid.uuid4(), text=text[:2000]
                )
        except DomainError as exc:
            self.stderr.write(f"refused: {exc.detail}")
            return
        streamed: list[str] = []

        def on_delta(piece: str) -> None:
            if not streamed:
                self.stdout.write("\nDM: ", ending="")
            streamed.append(piece)
            self.stdout.write(piece, ending="")
            self.stdout.flush()

        ran = turns_run_pending(campaign_id=membership.campaign_id, on_delta=on_delta)
        if not ran:
            self.stdout.write("(another worker is running the turn; waiting for it)")
        events = self._turn_events(membership.campaign_id, action.seq)
        if streamed:
            self.stdout.write("")
        self._print_turn(events, "".join(streamed))

    def _turn_events(self, campaign_id: Any, action_seq: int) -> list[Any]:
        """The events after the action, through the narration (or failure) answering it."""
        deadline = time.monotonic() + WAIT_FOR_OTHER_WORKER_SECONDS
        while True:
            events = campaign_selectors.events_after(
                campaign_id=campaign_id, after_seq=action_seq, limit=1000
            )
            for i, event in enumerate(events):
                if (
                    event.type in ("dm_narration", "turn_failed")
                    and event.payload.get("through_seq", 0) >= action_seq
                ):
                    return events[: i + 1]
            if time.monotonic() > deadline:
                raise CommandError("no answer from the DM; is a worker running?")
            time.sleep(0.2)

    def _print_turn(self, events: list[Any], streamed: str) -> None:
        reasons: dict[str, str] = {}
        for event in events:
            p = event.payload
            if event.type == "roll_requested":
                reasons[p.get("roll_id")] = p.get("reason") or "a check"
            elif event.type == "roll_result":
                why = reasons.get(p.get("roll_id"), "a check")
                self.stdout.write(f"  [roll] {why}: {p.get('detail') or p.get('total')}")
            elif event.type == "state_patch_applied":
                for op in p.get("patches", []):
                    value = f" {op.get('value')!r}" if "value" in op else ""
                    self.stdout.write(f"  [state] {op.get('op')} {op.get('path')}{value}")
            elif event.type == "state_patch_rejected":
                self.stdout.write(f"  [state refused] {p.get('error')}")
            elif event.type == "entity_created":
                entity = p.get("entity", {})
                self.stdout.write(f"  [new {entity.get('kind')}] {entity.get('name')}")
            elif event.type == "audio_cue":
                self.stdout.write(f"  [sound] {p.get('cue')}")
            elif event.type == "turn_failed":
                self.stdout.write(
                    self.style.ERROR(f"DM turn failed ({p.get('code')}): {p.get('detail')}")
                )
            elif event.type == "dm_narration":
                if p.get("text") != streamed:
                    label = "DM (fallback)" if p.get("fallback") else "DM"
                    self.stdout.write(f"\n{label}: {p.get('text')}")
                for error in p.get("tool_errors", []):
                    self.stdout.write(
                        f"  [tool refused] {error.get('name')}: {error.get('reason')}"
                    )
                self.stdout.write("\nWhat now?")
                for number, option in enumerate(p.get("options", []), start=1):
                    self.stdout.write(f"  {number}. {option}")
                self.stdout.write("")
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
        return user
