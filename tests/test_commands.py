"""Management commands: seed_demo, rebuild_snapshots, export_campaign, import_campaign."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from campaigns import services
from campaigns.events import NewEvent
from campaigns.models import Campaign, Event, Membership, Snapshot

pytestmark = pytest.mark.django_db


def run(*args: Any, **options: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def counts() -> dict[str, int]:
    return {
        "users": get_user_model().objects.count(),
        "campaigns": Campaign.objects.count(),
        "memberships": Membership.objects.count(),
        "events": Event.objects.count(),
    }


# --- seed_demo --------------------------------------------------------------------------------


def test_seed_demo_creates_the_demo_and_a_second_run_adds_nothing(settings):
    settings.DEBUG = True
    out, _ = run("seed_demo")

    users = {u.username: u for u in get_user_model().objects.all()}
    assert set(users) == {"demo-gm", "demo-alice", "demo-bob"}
    for username, password in [
        ("demo-gm", "demo-gm-pass"),
        ("demo-alice", "alice-pass"),
        ("demo-bob", "bob-pass"),
    ]:
        assert users[username].check_password(password)
        assert username in out and password in out
    [campaign] = Campaign.objects.all()
    assert campaign.name == "The Sunken Crown" and campaign.created_by == users["demo-gm"]
    roles = {m.user.username: m.role for m in campaign.memberships.select_related("user")}
    assert roles == {"demo-gm": "gm", "demo-alice": "player", "demo-bob": "player"}
    state = Snapshot.objects.get(campaign=campaign).state
    assert state["scene"]["location"] and state["scene"]["description"]
    assert len(state["characters"]) == 2
    assert "http://127.0.0.1:8000/" in out
    assert campaign.invite_code in out

    before = counts()
    version = Snapshot.objects.get(campaign=campaign).version
    out_again, _ = run("seed_demo")
    assert counts() == before
    assert Snapshot.objects.get(campaign=campaign).version == version
    assert campaign.invite_code in out_again and "nothing new" in out_again
    assert "http://127.0.0.1:9000/" in run("seed_demo", "--url", "http://127.0.0.1:9000/")[0]


def test_seed_demo_refuses_without_debug_unless_forced(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG"):
        run("seed_demo")
    assert counts()["users"] == 0
    run("seed_demo", "--force")
    assert Campaign.objects.filter(name="The Sunken Crown").count() == 1


# --- rebuild_snapshots ------------------------------------------------------------------------


def folded_state(campaign: Campaign) -> dict[str, Any]:
    return services.fold_events(Event.objects.filter(campaign=campaign).order_by("seq"))


def test_rebuild_reports_no_drift_on_a_healthy_campaign(campaign, join, make_user):
    join(make_user("alice"))
    out, _ = run("rebuild_snapshots")
    assert "1 campaign(s) checked, 0 with drift" in out
    out, _ = run("rebuild_snapshots", "--campaign", str(campaign.id), "--check")
    assert "0 with drift" in out


def test_rebuild_reports_and_fixes_a_corrupted_snapshot(campaign, join, make_user):
    join(make_user("alice"))
    healthy = Snapshot.objects.get(campaign=campaign)
    corrupted = dict(
        healthy.state, scene={"location": "Nowhere", "description": ""}, flags={"x": 1}
    )
    Snapshot.objects.filter(campaign=campaign).update(state=corrupted, version=healthy.version - 1)

    out, _ = run("rebuild_snapshots")

    [line] = [ln for ln in out.splitlines() if str(campaign.id) in ln]
    assert "flags, scene" in line and "fixed" in line
    assert f"stored version {healthy.version - 1}" in line
    assert f"fold to version {healthy.version}" in line
    assert "1 with drift" in out
    fixed = Snapshot.objects.get(campaign=campaign)
    assert fixed.state == folded_state(campaign) == healthy.state
    assert fixed.version == healthy.version
    out, _ = run("rebuild_snapshots", "--check")
    assert "0 with drift" in out


def test_rebuild_check_exits_non_zero_and_fixes_nothing(campaign):
    broken = dict(Snapshot.objects.get(campaign=campaign).state, last_options=["stale"])
    Snapshot.objects.filter(campaign=campaign).update(state=broken)
    other = services.campaign_create(name="Healthy", creator=campaign.created_by)

    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("rebuild_snapshots", "--check", stdout=out)
    assert raised.value.returncode == 1
    assert "2 campaign(s) checked, 1 with drift" in str(raised.value)
    assert f"{campaign.id}: drift in last_options" in out.getvalue()
    assert str(other.id) not in out.getvalue()
    assert Snapshot.objects.get(campaign=campaign).state == broken


@pytest.mark.parametrize(
    ("value", "message"),
    [("not-a-uuid", "not a campaign id"), (str(uuid.uuid4()), "no campaign with id")],
)
def test_rebuild_refuses_a_bad_campaign_id(campaign, value, message):
    with pytest.raises(CommandError, match=message):
        run("rebuild_snapshots", "--campaign", value)


# --- export and import ------------------------------------------------------------------------


def envelope_fields(event: Event) -> tuple[Any, ...]:
    return (
        event.seq,
        event.type,
        event.payload,
        event.actor_kind,
        event.actor_user_id,
        event.visibility,
        event.created_at,
    )


@pytest.fixture
def played(campaign, gm, join, make_user) -> Campaign:
    """A campaign with players, an action, a hidden event and a departure."""
    alice, bob = make_user("alice"), make_user("bob")
    membership = join(alice, "Alice")
    join(bob, "Bob")
    services.player_action_submit(membership=membership, action_id=uuid.uuid4(), text="I open it")
    services.events_append(
        campaign_id=campaign.id,
        events=[
            NewEvent(
                "turn_failed",
                {"turn_id": str(uuid.uuid4()), "code": "model_error", "detail": "for the GM"},
                "system",
                None,
                {"kind": "gm"},
            ),
            NewEvent(
                "turn_failed",
                {"turn_id": str(uuid.uuid4()), "code": "rate_limited", "detail": "for Alice"},
                "dm",
                None,
                {"kind": "users", "user_ids": [str(alice.id)]},
            ),
        ],
    )
    services.membership_leave(campaign_id=campaign.id, user_id=bob.id)
    return campaign


def test_export_then_import_gives_the_same_events_under_new_ids(played, gm, tmp_path: Path):
    path = tmp_path / "export.jsonl"
    _, err = run("export_campaign", str(played.id), "--output", str(path))
    assert f"exported {Event.objects.filter(campaign=played).count()} events" in err
    lines = path.read_text(encoding="utf-8").splitlines()
    original = list(Event.objects.filter(campaign=played).order_by("seq"))
    assert len(lines) == len(original) > 5
    assert [json.loads(line)["id"] for line in lines] == [str(e.id) for e in original]

    # stdout gives the same bytes as --output.
    stdout, _ = run("export_campaign", str(played.id))
    assert stdout.splitlines() == lines

    new_owner = get_user_model().objects.create_user(username="archivist", password="x")
    out, _ = run("import_campaign", str(path), "--owner", "archivist")
    new_id = uuid.UUID(out.strip())
    assert new_id != played.id
    copy = Campaign.objects.get(id=new_id)
    assert copy.name == played.name and copy.created_by == new_owner
    assert copy.invite_code != played.invite_code

    imported = list(Event.objects.filter(campaign=copy).order_by("seq"))
    assert [e.seq for e in imported] == list(range(1, len(imported) + 1))
    copied, added = imported[: len(original)], imported[len(original) :]
    assert [envelope_fields(e) for e in copied] == [envelope_fields(e) for e in original]
    assert not {e.id for e in imported} & {e.id for e in original}
    # After the copy, the import may only commit a dice seed of the copy's own.
    assert {e.type for e in added} <= {"dice_seed_committed"}

    snapshot = Snapshot.objects.get(campaign=copy)
    assert snapshot.version == len(imported)
    assert snapshot.state == folded_state(copy)
    assert services.fold_events(copied) == Snapshot.objects.get(campaign=played).state
    roles = {m.user.username: m.role for m in copy.memberships.select_related("user")}
    assert roles == {"archivist": "gm", "gm": "gm", "alice": "player"}  # bob had left


def corrupt(lines: list[str], number: int, change: Any) -> list[str]:
    envelope = json.loads(lines[number - 1])
    result = change(envelope)
    lines = list(lines)
    lines[number - 1] = result if isinstance(result, str) else json.dumps(envelope)
    return lines


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: "{not json", "line {n}: not JSON"),
        (lambda e: e.update(type="made_up"), "line {n}: unknown event type 'made_up'"),
        (lambda e: e["payload"].update(role="king"), "line {n}: invalid player_joined payload"),
        (lambda e: e.update(seq=99), "line {n}: seq 99 where {n} was expected"),
        (lambda e: e.pop("created_at") and None, "line {n}: missing created_at"),
        (lambda e: e.update(created_at="yesterday"), "line {n}: Invalid isoformat"),
        (lambda e: e.update(actor={"kind": "god"}), "line {n}: bad actor"),
        (lambda e: e.update(visibility={"kind": "users"}), "line {n}: visibility of kind users"),
        (lambda e: "[1, 2]", "line {n}: not a JSON object"),
    ],
)
def test_import_of_a_broken_file_names_the_line_and_creates_nothing(
    played, gm, tmp_path: Path, change, message
):
    out, _ = run("export_campaign", str(played.id))
    lines = out.splitlines()
    # The last player to join: a line in the middle of the file.
    n = max(i for i, line in enumerate(lines, 1) if json.loads(line)["type"] == "player_joined")
    assert 1 < n < len(lines)
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(corrupt(lines, n, change)) + "\n", encoding="utf-8")
    before = counts()

    with pytest.raises(CommandError, match=message.format(n=n)) as raised:
        run("import_campaign", str(path), "--owner", "gm")

    assert str(path) in str(raised.value)
    assert counts() == before


def test_import_refuses_a_repeated_action_and_files_that_are_not_exports(played, tmp_path: Path):
    out, _ = run("export_campaign", str(played.id))
    lines = out.splitlines()
    [action_line] = [n for n, line in enumerate(lines, 1) if '"player_action"' in line]
    repeated = json.loads(lines[action_line - 1])
    repeated["seq"] = len(lines) + 1
    path = tmp_path / "repeat.jsonl"
    path.write_text("\n".join([*lines, json.dumps(repeated)]) + "\n", encoding="utf-8")
    before = counts()
    with pytest.raises(CommandError, match=rf"line {len(lines) + 1}: repeats action:"):
        run("import_campaign", str(path), "--owner", "gm")

    headless = tmp_path / "headless.jsonl"
    headless.write_text("", encoding="utf-8")
    with pytest.raises(CommandError, match="starts with its campaign_created"):
        run("import_campaign", str(headless), "--owner", "gm")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(CommandError, match="not UTF-8"):
        run("import_campaign", str(binary), "--owner", "gm")
    with pytest.raises(CommandError, match="cannot read"):
        run("import_campaign", str(tmp_path / "missing.jsonl"), "--owner", "gm")
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        run("import_campaign", str(path), "--owner", "nobody")
    assert counts() == before


def test_export_refuses_unknown_campaigns_and_leaves_no_file(campaign, tmp_path: Path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(CommandError, match="not a campaign id"):
        run("export_campaign", "42", "--output", str(target))
    with pytest.raises(CommandError, match="no such campaign"):
        run("export_campaign", str(uuid.uuid4()), "--output", str(target))
    with pytest.raises(CommandError, match="cannot write"):
        run("export_campaign", str(campaign.id), "--output", str(tmp_path / "no" / "dir.jsonl"))
    assert list(tmp_path.iterdir()) == []
