"""The dice verification page: every roll of every revealed seed, recomputed."""

from __future__ import annotations

import re
import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_http_methods, require_POST

from rpgai.errors import DomainError

from . import selectors
from .dice import dice_verify
from .models import Membership
from .tools import dice_seed_reveal


def _membership_or_404(request: HttpRequest, campaign_id: uuid.UUID) -> Membership:
    membership = selectors.membership_get(campaign_id=campaign_id, user_id=request.user.id)
    if membership is None:
        # As the room does: an outsider learns nothing, not even that the campaign exists.
        raise Http404("No such campaign")
    return membership


def _struck(detail: str) -> SafeString:
    """d20's `~~dropped~~` marks as <del>, everything else escaped."""
    return mark_safe(re.sub(r"~~(.+?)~~", r"<del>\1</del>", str(escape(detail))))


@login_required
@require_http_methods(["GET"])
def dice_page(request: HttpRequest, campaign_id: uuid.UUID) -> HttpResponse:
    membership = _membership_or_404(request, campaign_id)
    report = dice_verify(campaign_id=campaign_id, viewer=selectors.Viewer.of(membership))
    for seed in report.seeds:
        for roll in seed.rolls:
            roll.stored_html = _struck(roll.stored_detail)  # type: ignore[attr-defined]
            roll.computed_html = _struck(roll.computed_detail)  # type: ignore[attr-defined]
    return render(
        request,
        "campaigns/verify.html",
        {
            "campaign": membership.campaign,
            "membership": membership,
            "report": report,
            "seeds": list(reversed(report.seeds)),  # the current commitment first
        },
    )


@login_required
@require_POST
def dice_reveal(request: HttpRequest, campaign_id: uuid.UUID) -> HttpResponse:
    membership = _membership_or_404(request, campaign_id)
    if not membership.is_gm:
        messages.error(request, "Only a GM can reveal the dice seed.")
        return redirect("campaign-dice", campaign_id=campaign_id)
    try:
        dice_seed_reveal(campaign_id=campaign_id, by_user=request.user)
    except DomainError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, "The seed is revealed and a new one is committed.")
    return redirect("campaign-dice", campaign_id=campaign_id)
