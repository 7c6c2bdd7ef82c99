"""Members whose account is deleted (issue 20; docs/security.md, "Deleting an account").

An account that goes leaves every campaign it was in, under a name that is no longer
theirs: each campaign's log gets a `player_left` whose `display_name` is
`ANONYMOUS_NAME` and which carries `account_deleted: true`, the membership row goes,
and their character, when it still carries their table name (the placeholder made when
they joined, named after them, or a sheet they gave their own name), is renamed
`ANONYMOUS_CHARACTER_NAME` by a `character_updated` before it; a name they made up for
their hero stays. Both are ordinary events
appended through `events_append`, so replaying the log (`rebuild_snapshots`) gives the
same state as the stored snapshot, with the name gone from it.

Events already in the log are never changed (campaigns.immutability): the name they
carry (`player_joined.display_name` and its placeholder `character.name`, and the
`display_name` of an earlier `player_left`) stays stored. `campaigns.selectors.names_withheld`
says which names to withhold when events are shown to people.

A campaign whose only member is the account is deleted with it (nobody else has a stake
in it). An account that is the only GM of a campaign with other members is refused
(409 `sole_gm`): its GM hands the role to another member (or removes the others) first.

(How old events are shown with the name withheld lives in campaigns.selectors:
`names_withheld`, `envelope_withheld`, `event_envelopes`.)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from rpgai.errors import Conflict, DomainError, NotFound

from . import services
from .events import NewEvent
from .models import Membership
from .selectors import ANONYMOUS_CHARACTER_NAME, ANONYMOUS_NAME


@dataclass(frozen=True)
class CampaignRef:
    id: uuid.UUID
    name: str


@dataclass
class AccountCampaigns:
    """What deleting an account does to its campaigns."""

    leave: list[CampaignRef] = field(default_factory=list)  # left under ANONYMOUS_NAME
    delete: list[CampaignRef] = field(default_factory=list)  # the account was alone there
    blocked: list[CampaignRef] = field(default_factory=list)  # the only GM, with others


class SoleGm(Conflict):
    code = "sole_gm"


def account_campaigns_plan(*, user_id: uuid.UUID | str) -> AccountCampaigns:
    """What deleting this account would do to each of its campaigns (nothing changes)."""
    plan = AccountCampaigns()
    memberships = Membership.objects.filter(user_id=user_id).select_related("campaign")
    for membership in memberships.order_by("campaign__name", "campaign_id"):
        ref = CampaignRef(membership.campaign_id, membership.campaign.name)
        others = Membership.objects.filter(campaign_id=membership.campaign_id).exclude(
            user_id=user_id
        )
        if not others.exists():
            plan.delete.append(ref)
        elif membership.is_gm and not others.filter(role=Membership.Role.GM).exists():
            plan.blocked.append(ref)
        else:
            plan.leave.append(ref)
    return plan


def sole_gm_detail(blocked: list[CampaignRef]) -> str:
    names = ", ".join(f"“{c.name}”" for c in blocked)
    return (
        f"You are the only game master of {names}, and other people play there. Hand the "
        "GM role to another member (or remove the other members) first, then delete your "
        "account."
    )


def account_campaigns_leave(*, user_id: uuid.UUID | str, request_id: str = "") -> AccountCampaigns:
    """Take a deleted account out of every campaign: leave the shared ones under
    ANONYMOUS_NAME, delete those it was alone in. All or nothing: SoleGm (and nothing
    changes) when it is the only GM of a campaign with other members. Call it inside the
    transaction that deletes the account."""
    with transaction.atomic():
        plan = account_campaigns_plan(user_id=user_id)
        if plan.blocked:
            raise SoleGm(sole_gm_detail(plan.blocked))
        for ref in plan.leave:
            member_remove_deleted_account(
                campaign_id=ref.id, user_id=user_id, request_id=request_id
            )
        for ref in plan.delete:
            services.campaign_delete(campaign_id=ref.id)
    return plan


def member_remove_deleted_account(
    *, campaign_id: uuid.UUID | str, user_id: uuid.UUID | str, request_id: str = ""
) -> None:
    """This member's account is being deleted: rename their character if it carries their
    table name, append `player_left` {user_id, display_name: ANONYMOUS_NAME, role,
    account_deleted: true} (their sockets in the room close on it, as for a kick), and
    remove the membership. SoleGm if they are the campaign's only GM and others remain
    (checked under the log's lock); NotFound if they are not a member."""
    user_id = str(user_id)
    with transaction.atomic():
        membership = Membership.objects.filter(campaign_id=campaign_id, user_id=user_id).first()
        if membership is None:
            raise NotFound("not a member of this campaign")
        role = membership.role
        table_name = membership.display_name

        def check(state: dict[str, Any]) -> None:
            others = Membership.objects.filter(campaign_id=campaign_id).exclude(user_id=user_id)
            if (
                role == Membership.Role.GM
                and others.exists()
                and not others.filter(role=Membership.Role.GM).exists()
            ):
                campaign = membership.campaign
                raise SoleGm(sole_gm_detail([CampaignRef(campaign.id, campaign.name)]))

        def leaving(state: dict[str, Any]) -> list[NewEvent]:
            return [
                NewEvent(
                    "player_left",
                    {
                        "user_id": user_id,
                        "display_name": ANONYMOUS_NAME,
                        "role": role,
                        "account_deleted": True,
                        # Their characters leave the party, as on any leave.
                        "departed_character_ids": services.party_characters_of(state, user_id),
                    },
                    "system",
                    None,
                )
            ]

        def renamed_and_leaving(state: dict[str, Any]) -> list[NewEvent]:
            return _characters_renamed(state, user_id, table_name) + leaving(state)

        try:
            services.events_append(
                campaign_id=campaign_id,
                events=renamed_and_leaving,
                precondition=check,
                request_id=request_id,
            )
        except DomainError as exc:
            # An archived campaign is read-only to sheets (campaigns.services): the member
            # still leaves; the character keeps its name there (docs/security.md).
            if exc.code != "archived":
                raise
            services.events_append(
                campaign_id=campaign_id, events=leaving, precondition=check, request_id=request_id
            )
        membership.delete()


def _characters_renamed(state: dict[str, Any], user_id: str, table_name: str) -> list[NewEvent]:
    """A `character_updated` for each of the member's characters that still carries their
    table name (the placeholder made when they joined is named after them; a player may
    also name a sheet after themselves). A name they made up for their hero stays: it is
    the story's, not theirs."""
    own_name = table_name.strip().casefold()
    events = []
    for character_id, character in (state.get("characters") or {}).items():
        if not isinstance(character, dict) or character.get("owner_user_id") != user_id:
            continue
        if str(character.get("name") or "").strip().casefold() != own_name:
            continue
        events.append(
            NewEvent(
                "character_updated",
                {"character_id": character_id, "changes": {"name": ANONYMOUS_CHARACTER_NAME}},
                "system",
                None,
            )
        )
    return events
