"""Server-rendered pages: my campaigns, create, join, and the room."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
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
    request: HttpRequest, create_form: CampaignCreateForm, *, show_archived: bool = False
) -> HttpResponse:
    archived = selectors.campaigns_for_user(user_id=request.user.id, archived=True)
    return render(
        request,
        "campaigns/list.html",
        {
            "memberships": selectors.campaigns_for_user(user_id=request.user.id),
            "archived_memberships": archived if show_archived else [],
            "archived_count": archived.count(),
            "show_archived": show_archived,
            "create_form": create_form,
            "join_form": CampaignJoinForm(auto_id="join_%s"),
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


@login_required
@require_POST
def campaign_join(request: HttpRequest) -> HttpResponse:
    form = CampaignJoinForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Enter the invite code your GM gave you.")
        return redirect("campaign-list")
    try:
        membership = services.campaign_join(
            invite_code=form.cleaned_data["invite_code"],
            user=request.user,
            display_name=form.cleaned_data["display_name"] or None,
        )
    except DomainError as exc:
        messages.error(request, exc.detail)
        return redirect("campaign-list")
    # A new player lands in the character form (room.js opens it for a blank sheet only).
    return redirect(reverse("campaign-room", args=[membership.campaign_id]) + "#make-character")


@login_required
@require_http_methods(["GET"])
def campaign_room(request: HttpRequest, campaign_id: uuid.UUID) -> HttpResponse:
    membership = selectors.membership_get(campaign_id=campaign_id, user_id=request.user.id)
    if membership is None:
        # Not "forbidden": an outsider learns nothing, not even that the campaign exists.
        raise Http404("No such campaign")
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
