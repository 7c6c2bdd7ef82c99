"""A roll by a player or GM is checked under the log's lock (issue 16): someone removed
from the campaign a moment ago, whose socket has not closed yet, rolls nothing."""

from __future__ import annotations

import pytest

from campaigns.models import Event
from campaigns.services import membership_leave
from campaigns.tools import roll_make
from rpgai.errors import PermissionDenied

pytestmark = pytest.mark.django_db


def test_a_removed_player_cannot_roll_and_nothing_is_appended(campaign, join, make_user):
    alice = make_user("alice")
    join(alice, "Alice")
    rolled = roll_make(
        campaign_id=campaign.id,
        formula="1d20",
        reason="Perception",
        requested_by="player",
        actor_kind="player",
        actor_user_id=alice.id,
    )
    assert [e.type for e in rolled] == ["roll_requested", "roll_result"]
    membership_leave(campaign_id=campaign.id, user_id=alice.id)
    count = Event.objects.filter(campaign=campaign).count()
    with pytest.raises(PermissionDenied):
        roll_make(
            campaign_id=campaign.id,
            formula="1d20",
            reason="Perception",
            requested_by="player",
            actor_kind="player",
            actor_user_id=alice.id,
        )
    assert Event.objects.filter(campaign=campaign).count() == count


def test_the_dm_rolls_without_a_member_behind_it(campaign):
    rolled = roll_make(
        campaign_id=campaign.id,
        formula="1d20",
        reason="the ogre attacks",
        requested_by="dm",
        actor_kind="dm",
        actor_user_id=None,
    )
    assert [e.type for e in rolled] == ["roll_requested", "roll_result"]
