"""Server-rendered pages: my campaigns, create, join, and the room."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from rpgai.errors import DomainError

from . import selectors, services
from .forms import CampaignCreateForm, CampaignJoinForm


def home(request: HttpRequest) -> HttpResponse:
    return redirect("campaign-list" if request.user.is_authenticated else "login")


@login_required
@require_http_methods(["GET"])
def campaign_list(request: HttpRequest) -> HttpResponse:
    """My campaigns in play; the archived ones with `?archived=1` (they leave the list)."""
    return _list_page(
        request,
        # Distinct ids: both forms have a display_name field on the same page.
        CampaignCreateForm(auto_id="create_%s"),
        show_archived=request.GET.get("archived") == "1",
    )


def _list_page(
    request: HttpRequest,
    create_form: CampaignCreateForm,
    *,
    show_archived: bool = False,
    join_form: CampaignJoinForm | None = None,
) -> HttpResponse:
    archived = selectors.campaigns_for_user(user_id=request.user.id, archived=True)
    memberships = list(selectors.campaigns_for_user(user_id=request.user.id))
    # Players, last activity and whose turn, for every card in one read (no query per card).
    statuses = selectors.tables_status(campaign_ids=[m.campaign_id for m in memberships])
    for membership in memberships:
        membership.table = statuses.get(str(membership.campaign_id), selectors.TableStatus())
    return render(
        request,
        "campaigns/list.html",
        {
            "memberships": memberships,
            "archived_memberships": archived if show_archived else [],
            "archived_count": archived.count(),
            "show_archived": show_archived,
            "create_form": create_form,
            "join_form": join_form or CampaignJoinForm(auto_id="join_%s"),
        },
    )


@login_required
@require_POST
def campaign_create(request: HttpRequest) -> HttpResponse:
    """A new campaign with its setup; the DM narrates its opening scene right away."""
    form = CampaignCreateForm(request.POST, auto_id="create_%s")
    if form.is_valid():
        data = form.cleaned_data
        try:
            campaign = services.campaign_create(
                name=data["name"],
                edition=data["edition"],
                creator=request.user,
                display_name=data["display_name"] or None,
                premise=data["premise"],
                tone=data["tone"],
                turn_mode=data["turn_mode"],
                lines=data["lines"],
                veils=data["veils"],
                opening=True,
                request_id=getattr(request, "request_id", ""),
            )
        except DomainError as exc:
            form.add_error(None, exc.detail)
        else:
            return redirect("campaign-room", campaign_id=campaign.id)
    messages.error(request, "The campaign was not created: see what to fix in the form.")
    return _list_page(request, form)


# What a refused join says, in the form (the service's own words are for the API).
JOIN_REFUSED = {
    "bad_invite": "That invite code does not open any campaign. Check it with your GM: "
    "codes have 10 letters and digits, and a GM may have made a new one.",
    "banned": "The GM of this campaign removed you from it. Only they can let you back in.",
}


@login_required
@require_POST
def campaign_join(request: HttpRequest) -> HttpResponse:
    """Join by invite code. A refusal shows the list page again with the form as it was
    sent (what was typed stays) and says why, beside the field."""
    form = CampaignJoinForm(request.POST, auto_id="join_%s")
    if not form.is_valid():
        messages.error(request, "Enter the invite code your GM gave you.")
        return _list_page(request, CampaignCreateForm(auto_id="create_%s"), join_form=form)
    try:
        membership = services.campaign_join(
            invite_code=form.cleaned_data["invite_code"],
            user=request.user,
            display_name=form.cleaned_data["display_name"] or None,
        )
    except DomainError as exc:
        words = JOIN_REFUSED.get(exc.code, exc.detail)
        form.add_error("invite_code", words)
        messages.error(
            request,
            "You did not join: the GM removed you from this campaign."
            if exc.code == "banned"
            else "You did not join: the invite code was not accepted.",
        )
        return _list_page(request, CampaignCreateForm(auto_id="create_%s"), join_form=form)
    # A new player lands in the character form (room.js opens it for a blank sheet only).
    return redirect(reverse("campaign-room", args=[membership.campaign_id]) + "#make-character")


@login_required
@require_http_methods(["GET"])
def campaign_room(request: HttpRequest, campaign_id: uuid.UUID) -> HttpResponse:
    membership = selectors.membership_get(campaign_id=campaign_id, user_id=request.user.id)
    if membership is None:
        return _not_at_table(request, campaign_id)
    return render(
        request,
        "campaigns/room.html",
        {
            "campaign": membership.campaign,
            "membership": membership,
            "room_config": {
                "campaignId": str(campaign_id),
                "userId": str(request.user.id),
                "displayName": membership.display_name,
                "role": membership.role,
                "wsPath": f"/ws/campaigns/{campaign_id}/",
                "maxActionChars": 2000,
                "archived": membership.campaign.archived,
            },
        },
    )


def _not_at_table(request: HttpRequest, campaign_id: uuid.UUID) -> HttpResponse:
    """A room link opened by someone who is not a member: a page in the site's look (never
    Django's debug page, DEBUG or not) that says so in plain words and offers the join
    form. 404, and the same words whether the campaign exists or not: an outsider learns
    nothing of it. A member the GM removed is told that, with a 403 (they knew it)."""
    if selectors.user_banned(campaign_id=campaign_id, user_id=request.user.id):
        return render(
            request,
            "403.html",
            {
                "page_title": "Not at this table",
                "heading": "You're not at this table any more",
                "lead": "The game master of this campaign removed you from it.",
                "hint": "Only they can let you back in; then join again with the invite code.",
            },
            status=403,
        )
    return render(
        request,
        "404.html",
        {
            "page_title": "Not at this table",
            "heading": "You're not at this table",
            "lead": "This room is for the members of its campaign, and you are not one of "
            "them (or the link is wrong).",
            "hint": "If a game master gave you an invite code, join with it here.",
            "join_form": CampaignJoinForm(auto_id="join_%s"),
        },
        status=404,
    )
