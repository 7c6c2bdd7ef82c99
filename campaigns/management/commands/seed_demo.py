"""A demo GM, two players and a campaign, for `make run`. Safe to run every time."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from campaigns import selectors, services
from campaigns.models import Campaign

DEMO_URL = "http://127.0.0.1:8000/"
CAMPAIGN_NAME = "The Sunken Crown"
OPENING_SCENE = {
    "location": "The Drowned Lantern, a smugglers' inn on the tidal flats",
    "description": (
        "Rain drums on the shutters and the tide is coming in under the floorboards. "
        "A soaked stranger has just set a barnacled iron crown on the bar, and every "
        "fisherman in the room has gone quiet."
    ),
}

# The demo's setup (CONTRACTS §7): the DM narrates its opening scene from it, once, right
# after the campaign is made (embedded: in this command; with a broker: on a worker).
SETUP = {
    "premise": (
        "A drowned kingdom's crown has washed up on the tidal flats, and every smuggler, "
        "priest and would-be heir on the coast wants it. The party holds it, for tonight."
    ),
    "tone": "salt-stained adventure, dark but hopeful",
    "turn_mode": "free",
    "lines": ["harm to children"],
    "veils": ["torture"],
}

# (username, password, display name); demo-only passwords, refused with DEBUG off.
GM = ("demo-gm", "demo-gm-pass", "The Game Master")
PLAYERS = [
    ("demo-alice", "alice-pass", "Alice"),
    ("demo-bob", "bob-pass", "Bob"),
]


class Command(BaseCommand):
    help = (
        f"Create the demo users ({GM[0]}, {', '.join(p[0] for p in PLAYERS)}) and the "
        f'campaign "{CAMPAIGN_NAME}" with both players joined, then print how to log in. '
        "Idempotent: a second run creates nothing. The passwords are public, so it refuses "
        "to run with DEBUG off unless --force."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="Run even with DEBUG off (puts accounts with public passwords on the server).",
        )
        parser.add_argument(
            "--url",
            default=DEMO_URL,
            help=f"The address to print for the web UI (default {DEMO_URL}).",
        )

    def handle(self, *args: Any, force: bool = False, url: str = DEMO_URL, **options: Any) -> None:
        if not settings.DEBUG and not force:
            raise CommandError(
                "DEBUG is off: refusing to create demo accounts with public passwords on what "
                "may be a production server. Use --force if you really mean it."
            )
        with transaction.atomic():
            gm, created = _demo_user(*GM[:2])
            made = int(created)
            players = []
            for username, password, _ in PLAYERS:
                player, created = _demo_user(username, password)
                players.append(player)
                made += int(created)

            campaign = (
                Campaign.objects.filter(name=CAMPAIGN_NAME, created_by=gm)
                .order_by("created_at")
                .first()
            )
            if campaign is None:
                campaign = services.campaign_create(
                    name=CAMPAIGN_NAME,
                    edition="5e",
                    creator=gm,
                    display_name=GM[2],
                    scene=OPENING_SCENE,
                    opening=True,
                    request_id="seed_demo",
                    **SETUP,
                )
                made += 1
            for player, (_, _, display_name) in zip(players, PLAYERS, strict=True):
                if selectors.membership_get(campaign_id=campaign.id, user_id=player.id) is not None:
                    continue
                made += 1
                services.campaign_join(
                    invite_code=campaign.invite_code,
                    user=player,
                    display_name=display_name,
                    request_id="seed_demo",
                )

        verb = "Seeded" if made else "Demo already seeded, nothing new"
        self.stdout.write(self.style.SUCCESS(f"{verb}: campaign {CAMPAIGN_NAME!r} ({campaign.id})"))
        self.stdout.write(f"Open {url} and log in as:")
        for (username, password, display_name), role in [
            (GM, "GM"),
            *((p, "player") for p in PLAYERS),
        ]:
            self.stdout.write(
                f"  {role:<7} {username:<12} password {password:<14} ({display_name})"
            )
        self.stdout.write(f"Invite code: {campaign.invite_code}")


def _demo_user(username: str, password: str) -> tuple[Any, bool]:
    """The demo user, created if missing; its password reset to the demo one if changed."""
    user, created = get_user_model().objects.get_or_create(username=username)
    if created or not user.check_password(password):
        # set_password directly: the demo passwords need not pass the strength validators.
        user.set_password(password)
        user.save(update_fields=["password"])
    return user, created
