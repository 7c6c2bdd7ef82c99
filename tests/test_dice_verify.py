"""The seed reveal round trip: a GM reveals the seed (and commits a new one); verify_rolls
and the dice page recompute every roll of it and catch a tampered one."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from campaigns import services
from campaigns.dice import dice_verify, roll_compute
from campaigns.events import NewEvent
from campaigns.models import DiceSeed, Event, Snapshot
from campaigns.tools import dice_seed_reveal, roll_make, turn_commit
from rpgai.errors import Conflict, PermissionDenied

pytestmark = pytest.mark.django_db


def player_roll(campaign, user, formula="1d20+3", **kwargs: Any):
    return roll_make(
        campaign_id=campaign.id,
        formula=formula,
        reason="check",
        requested_by="player",
        actor_kind="player",
        actor_user_id=user.id,
        **kwargs,
    )


def verify(campaign_id) -> tuple[str, int]:
    out = io.StringIO()
    try:
        call_command("verify_rolls", str(campaign_id), stdout=out)
    except CommandError as exc:
        return out.getvalue() + str(exc), exc.returncode
    return out.getvalue(), 0


@pytest.fixture
def alice(campaign, join, make_user):
    user = make_user("alice")
    join(user, "Alice")
    return user


@pytest.fixture
def played(campaign, alice):
    """A campaign with DM and player rolls under its first seed."""
    turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration="Roll for it.",
        options=["Go"],
        tool_calls=[
            {"name": "roll", "args": {"formula": "4d6kh3", "reason": "Strength"}},
            {"name": "roll", "args": {"formula": "1d8e8+2", "reason": "Damage"}},
        ],
        through_seq=0,
    )
    for formula in ("2d20kh1+5", "(1d8+2)*2", "1d4rr1", "d%"):
        player_roll(campaign, alice, formula)
    return campaign


def test_reveal_publishes_the_seed_and_commits_a_new_one_in_one_go(played, gm):
    old = DiceSeed.objects.get(campaign=played)
    start = Snapshot.objects.get(campaign=played).version
    revealed, committed = dice_seed_reveal(campaign_id=played.id, by_user=gm)
    assert (revealed.seq, committed.seq) == (start + 1, start + 2)
    assert revealed.type == "dice_seed_revealed" and revealed.actor_kind == "gm"
    assert revealed.payload == {"seed_id": str(old.seed_id), "seed": old.secret}
    first_commit = Event.objects.get(campaign=played, type="dice_seed_committed", seq=2)
    assert (
        hashlib.sha256(bytes.fromhex(old.secret)).hexdigest() == first_commit.payload["seed_hash"]
    )
    new = DiceSeed.objects.get(campaign=played, revealed_at__isnull=True)
    assert committed.payload == {"seed_id": str(new.seed_id), "seed_hash": new.seed_hash}
    old.refresh_from_db()
    assert old.revealed_at is not None
    # Rolls go on with the new secret seed.
    _, result = roll_make(
        campaign_id=played.id,
        formula="1d20",
        reason="",
        requested_by="dm",
        actor_kind="dm",
        actor_user_id=None,
    )
    assert result.payload["seed_id"] == str(new.seed_id)


def test_verify_rolls_recomputes_every_roll_of_the_revealed_seed(played, gm):
    out, code = verify(played.id)
    assert code == 0 and "secret, 6 roll(s) not checkable yet" in out
    dice_seed_reveal(campaign_id=played.id, by_user=gm)
    out, code = verify(played.id)
    assert code == 0, out
    assert "hash matches, 6 roll(s) recomputed, 0 mismatch(es)" in out
    assert "every revealed roll matches" in out
    report = dice_verify(campaign_id=played.id)
    assert report.ok and report.checked == 6
    assert all(r.ok for s in report.seeds for r in s.rolls if s.revealed)


def test_a_crafted_roll_with_a_wrong_total_is_caught(played, gm, alice):
    [_, honest] = player_roll(played, alice, "1d20")
    seed = DiceSeed.objects.get(campaign=played, revealed_at__isnull=True)

    def natural_20(roll_id: str) -> bool:
        return roll_compute(formula="1d20", seed=seed.secret, roll_id=roll_id).total == 20

    forged = {
        **honest.payload,
        "roll_id": next(
            rid for rid in iter(lambda: str(uuid.uuid4()), None) if not natural_20(rid)
        ),
        "total": 20,  # a claimed natural 20 where the seed gives something else
        "detail": "1d20 (20) = 20",
    }
    services.events_append(
        campaign_id=played.id,
        events=[NewEvent("roll_result", forged, "player", alice.id)],
    )
    assert forged["seed_id"] == str(seed.seed_id)
    dice_seed_reveal(campaign_id=played.id, by_user=gm)
    out, code = verify(played.id)
    assert code == 1
    assert out.count("MISMATCH") == 1
    assert "1 mismatch(es)" in out
    report = dice_verify(campaign_id=played.id)
    [bad] = [r for s in report.seeds for r in s.rolls if r.ok is False]
    assert bad.roll_id == forged["roll_id"] and "total 20 in the log" in bad.problem


def test_a_tampered_export_is_caught_after_import_and_an_honest_one_verifies(played, gm):
    dice_seed_reveal(campaign_id=played.id, by_user=gm)
    lines = list(services.campaign_export(campaign_id=played.id))

    # The log alone is enough: the copy's server holds none of the original's secrets.
    honest = services.campaign_import(lines=lines, owner=gm)
    out, code = verify(honest.id)
    assert code == 0 and "6 roll(s) recomputed, 0 mismatch(es)" in out

    tampered_lines = []
    changed = False
    for line in lines:
        envelope = json.loads(line)
        if not changed and envelope["type"] == "roll_result":
            envelope["payload"]["total"] += 1
            changed = True
        tampered_lines.append(json.dumps(envelope))
    tampered = services.campaign_import(lines=tampered_lines, owner=gm)
    out, code = verify(tampered.id)
    assert code == 1 and out.count("MISMATCH") == 1, out

    # A swapped seed no longer hashes to its commitment.
    swapped_lines = []
    for line in lines:
        envelope = json.loads(line)
        if envelope["type"] == "dice_seed_revealed":
            envelope["payload"]["seed"] = "ab" * 32
        swapped_lines.append(json.dumps(envelope))
    swapped = services.campaign_import(lines=swapped_lines, owner=gm)
    out, code = verify(swapped.id)
    assert code == 1 and "HASH DOES NOT MATCH" in out


def test_a_roll_made_after_its_seed_was_revealed_is_flagged(played, gm, alice):
    seed = DiceSeed.objects.get(campaign=played)
    dice_seed_reveal(campaign_id=played.id, by_user=gm)
    roll_id = str(uuid.uuid4())
    outcome = roll_compute(formula="1d20", seed=seed.secret, roll_id=roll_id)
    services.events_append(
        campaign_id=played.id,
        events=[
            NewEvent(
                "roll_result",
                {
                    "roll_id": roll_id,
                    "seed_id": str(seed.seed_id),
                    "formula": "1d20",
                    "total": outcome.total,
                    "detail": outcome.detail,
                    "dice": outcome.dice,
                },
            )
        ],
    )
    out, code = verify(played.id)
    assert code == 1 and "already public" in out


def test_only_a_gm_reveals(played, alice, make_user):
    with pytest.raises(PermissionDenied):
        dice_seed_reveal(campaign_id=played.id, by_user=alice)
    with pytest.raises(PermissionDenied):
        dice_seed_reveal(campaign_id=played.id, by_user=make_user("outsider"))
    assert not Event.objects.filter(campaign=played, type="dice_seed_revealed").exists()


def test_reveal_without_a_committed_seed_is_a_conflict(campaign, gm):
    seed = DiceSeed.objects.get(campaign=campaign)
    services.events_append(
        campaign_id=campaign.id,
        events=[
            NewEvent("dice_seed_revealed", {"seed_id": str(seed.seed_id), "seed": seed.secret})
        ],
    )
    with pytest.raises(Conflict):
        dice_seed_reveal(campaign_id=campaign.id, by_user=gm)


def test_verify_rolls_command_errors(db):
    with pytest.raises(CommandError, match="not a campaign id"):
        call_command("verify_rolls", "nope")
    with pytest.raises(CommandError, match="no campaign"):
        call_command("verify_rolls", str(uuid.uuid4()))


# --- The page --------------------------------------------------------------------------------


def page(user, campaign) -> Any:
    client = Client()
    client.force_login(user)
    return client.get(f"/campaigns/{campaign.id}/dice")


def test_page_shows_members_the_checked_rolls(played, gm, alice):
    dice_seed_reveal(campaign_id=played.id, by_user=gm)
    response = page(alice, played)
    assert response.status_code == 200
    html = response.content.decode()
    assert "All 6 rolls of the revealed seeds match." in html
    assert html.count('aria-label="matches"') == 6
    assert "Reveal the current seed" not in html  # players do not reveal
    assert "Reveal the current seed" in page(gm, played).content.decode()
    # The current secret seed appears by its hash only.
    current = DiceSeed.objects.get(campaign=played, revealed_at__isnull=True)
    assert current.seed_hash in html and current.secret not in html


def test_page_reports_a_mismatch(played, gm, alice):
    [_, honest] = player_roll(played, alice, "1d6")
    services.events_append(
        campaign_id=played.id,
        events=[
            NewEvent(
                "roll_result",
                {**honest.payload, "roll_id": str(uuid.uuid4()), "total": 99},
                "player",
                alice.id,
            )
        ],
    )
    dice_seed_reveal(campaign_id=played.id, by_user=gm)
    html = page(alice, played).content.decode()
    assert "1 mismatch" in html and "total 99 in the log" in html


def test_page_hides_rolls_the_viewer_may_not_see(played, gm, alice):
    roll_make(
        campaign_id=played.id,
        formula="1d20",
        reason="secret GM roll",
        requested_by="dm",
        actor_kind="gm",
        actor_user_id=gm.id,
        visibility={"kind": "gm"},
    )
    dice_seed_reveal(campaign_id=played.id, by_user=gm)
    assert "All 6 rolls" in page(alice, played).content.decode()
    assert "All 7 rolls" in page(gm, played).content.decode()


def test_page_is_for_members_only(played, make_user):
    assert page(make_user("stranger"), played).status_code == 404
    response = Client().get(f"/campaigns/{played.id}/dice")
    assert response.status_code == 302 and "/login" in response["Location"]


def test_reveal_button_works_for_gms_only(played, gm, alice):
    client = Client()
    client.force_login(alice)
    client.post(f"/campaigns/{played.id}/dice/reveal")
    assert not Event.objects.filter(campaign=played, type="dice_seed_revealed").exists()
    client.force_login(gm)
    response = client.post(f"/campaigns/{played.id}/dice/reveal")
    assert response.status_code == 302
    assert Event.objects.filter(campaign=played, type="dice_seed_revealed").count() == 1
    stranger_client = Client()
    stranger_client.force_login(alice.__class__.objects.create_user(username="s", password="x"))
    assert stranger_client.post(f"/campaigns/{played.id}/dice/reveal").status_code == 404


def test_page_escapes_what_the_log_says_and_strikes_dropped_dice(played, gm, alice):
    [_, honest] = player_roll(played, alice, "2d20kh1")
    services.events_append(
        campaign_id=played.id,
        events=[
            NewEvent(
                "roll_result",
                {**honest.payload, "roll_id": str(uuid.uuid4()), "detail": "<script>x</script>"},
                "player",
                alice.id,
            )
        ],
    )
    dice_seed_reveal(campaign_id=played.id, by_user=gm)
    html = page(alice, played).content.decode()
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<del>" in html  # the dropped d20 of 2d20kh1
