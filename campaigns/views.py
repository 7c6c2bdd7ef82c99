"""Server-rendered pages: my campaigns, create, join, and the room."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from rpgai.errors import DomainError

from . import selectors, services
from .forms import CampaignCreateForm, CampaignJoinForm


def home(request: HttpRequest) -> HttpResponse:
    return redirect("campaign-list" if request.user.is_authenticated else "login")


@login_required
@require_http_methods(["GET"])
def campaign_list(request: HttpRequest) -> HttpResponse:
    memberships = selectors.campaigns_for_user(user_id=request.user.id)
    return render(
        request,
        "campaigns/list.html",
        {
            "memberships": memberships,
            # Distinct ids: both forms have a display_name field on the same page.
            "create_form": CampaignCreateForm(auto_id="create_%s"),
            "join_form": CampaignJoinForm(auto_id="join_%s"),
        },
    )


@login_required
@require_POST
def campaign_create(request: HttpRequest) -> HttpResponse:
    form = CampaignCreateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "A campaign needs a name and an edition.")
        return redirect("campaign-list")
    campaign = services.campaign_create(
        name=form.cleaned_data["name"],
        edition=form.cleaned_data["edition"],
        creator=request.user,
        display_name=form.cleaned_data["display_name"] or None,
    )
    return redirect("campaign-room", campaign_id=campaign.id)


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
    return redirect("campaign-room", campaign_id=membership.campaign_id)


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
            },
        },
    )
