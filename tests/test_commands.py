"""Management commands: seed_demo, rebuild_snapshots, export_campaign, import_campaign; and
for every command found: --help, argparse errors (exit 2) and bad values (exit 1, one line).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands, load_command_class
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


# --- Every command: --help, clear errors, exit codes ------------------------------------------
# Found by discovery, so that a new command is covered (and must add its bad-value case).

OUR_APPS = {"accounts", "billing", "campaigns", "memory", "orchestrator", "realtime", "voice"}
OUR_APPS |= {"rpgai"}
# The options every Django command has (their help is Django's).
DJANGO_OPTIONS = {
    "help",
    "version",
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
}


def our_commands() -> list[str]:
    return sorted(name for name, app in get_commands().items() if app.split(".")[0] in OUR_APPS)


# For each command, arguments with a well-formed but wrong value: exit 1, one line.
MISSING = str(uuid.UUID(int=1))
BAD_VALUES: dict[str, list[tuple[list[str], str]]] = {
    "export_campaign": [
        ([MISSING], f"no such campaign: {MISSING}"),
        (["not-a-uuid"], "'not-a-uuid' is not a campaign id"),
    ],
    "import_campaign": [
        (["/no/such/file.jsonl", "--owner", "gm"], "cannot read /no/such/file.jsonl"),
        (["-", "--owner", "nobody"], "no user named 'nobody'"),
    ],
    "memory_embed": [
        (["--campaign", MISSING], f"no campaign with id {MISSING}"),
        (["--campaign", "x"], "'x' is not a campaign id"),
    ],
    "play": [([MISSING], f"no campaign '{MISSING}'"), (["No such table"], "no campaign")],
    "rebuild_snapshots": [
        (["--campaign", MISSING], f"no campaign with id {MISSING}"),
        (["--campaign", "x"], "'x' is not a campaign id"),
    ],
    "seed_demo": [([], "DEBUG is off")],  # the tests run with DEBUG off
    "usage_report": [
        (["--campaign", MISSING], f"no campaign with id {MISSING}"),
        (["--campaign", "x"], "'x' is not a campaign id"),
    ],
    "verify_rolls": [
        ([MISSING], f"no campaign with id {MISSING}"),
        (["12"], "'12' is not a campaign id"),
    ],
}
# Arguments that argparse itself refuses (exit 2), beyond an unknown option.
BAD_USAGE: dict[str, list[list[str]]] = {
    "usage_report": [["--days", "0"], ["--days", "many"]],
    "import_campaign": [["file.jsonl"]],  # --owner is required
}


def run_from_command_line(
    name: str, *args: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    """`manage.py NAME ARGS` in this process, as from a shell: the exit code, stdout, stderr."""
    from django.db import connections

    # run_from_argv closes every connection when done; the test's transaction stays open.
    monkeypatch.setattr(connections, "close_all", lambda: None)
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        # Made here: a command binds sys.stdout and sys.stderr when it is created.
        command = load_command_class(get_commands()[name], name)
        try:
            command.run_from_argv(["manage.py", name, *args])
        except SystemExit as exc:
            code = exc.code
    return int(code or 0), out.getvalue(), err.getvalue()


def test_every_command_is_found_and_has_its_bad_value_cases():
    found = our_commands()
    assert {"export_campaign", "import_campaign", "play", "seed_demo", "usage_report"} <= set(found)
    missing = set(found) - set(BAD_VALUES)
    assert not missing, f"add the bad-value cases of {missing} to BAD_VALUES"


@pytest.mark.parametrize("name", our_commands())
def test_help_describes_the_command_and_exits_0(name, monkeypatch):
    code, out, err = run_from_command_line(name, "--help", monkeypatch=monkeypatch)
    assert code == 0, err
    assert out.startswith(f"usage: manage.py {name}")
    command = load_command_class(get_commands()[name], name)
    assert command.help.strip(), f"{name} has no help text"
    assert " ".join(command.help.split()[:3]) in " ".join(out.split())
    parser = command.create_parser("manage.py", name)
    for action in parser._actions:
        if action.dest not in DJANGO_OPTIONS and action.dest != "help":
            assert action.help, (
                f"{name}: {'/'.join(action.option_strings) or action.dest} has no help"
            )


@pytest.mark.parametrize("name", our_commands())
def test_bad_usage_exits_2_with_argparse_message_not_a_traceback(name, monkeypatch):
    command = load_command_class(get_commands()[name], name)
    required = [a for a in command.create_parser("manage.py", name)._actions if a.required]
    cases = [["--no-such-option"], *BAD_USAGE.get(name, [])]
    if required:
        cases.append([])  # a required argument missing
    for args in cases:
        code, out, err = run_from_command_line(name, *args, monkeypatch=monkeypatch)
        assert code == 2, (args, out, err)
        assert "Traceback" not in err
        assert f"manage.py {name}: error: " in err, err
        assert err.strip().splitlines()[-1].startswith(f"manage.py {name}: error: ")


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [(name, args, message) for name, cases in BAD_VALUES.items() for args, message in cases],
)
def test_bad_values_exit_1_with_one_line(name, args, message, monkeypatch, gm):
    if name not in our_commands():
        pytest.fail(f"BAD_VALUES names a command that does not exist: {name}")
    code, out, err = run_from_command_line(name, *args, monkeypatch=monkeypatch)
    assert code == 1, (out, err)
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("CommandError: ") and message in line, line


def test_a_real_shell_sees_the_exit_code_and_one_line(tmp_path):
    # The same path end to end, in a process of its own (no database needed for this one).
    result = subprocess.run(
        [sys.executable, "manage.py", "verify_rolls", "not-a-uuid"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}"},
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == "CommandError: 'not-a-uuid' is not a campaign id (a UUID)"
