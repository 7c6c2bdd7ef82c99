"""DM turns: one at a time per campaign, every action since the last narration answered
once, actions arriving mid-turn coalesced into exactly one follow-up turn, retries that
never duplicate, failures that end the turn with a code the room can show."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from billing.models import ModelUsage, Reservation
from billing.services import budget_set
from campaigns.models import Event
from campaigns.selectors import events_after, membership_get
from campaigns.services import player_action_submit
from campaigns.tools import turn_commit
from orchestrator.models import DMSettings, TurnLock
from orchestrator.receivers import turns_deferred
from orchestrator.services import (
    dm_settings_set,
    turn_lock_acquire,
    turn_lock_release,
    turn_run,
    turns_run_pending,
)
from orchestrator.tasks import run_turn
from rpgai.errors import Conflict, DomainError, NotFound
from tests.openai_server import Answer, Hang, serving
from tests.processes import celery_worker


@pytest.fixture
def openai_server(settings):
    with serving(settings) as server:
        yield server


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


@pytest.fixture
def bob(make_user, join):
    user = make_user("bob")
    join(user, "Bob")
    return user


def act(campaign, user, text: str):
    membership = membership_get(campaign_id=campaign.id, user_id=user.id)
    return player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)


def narrations(campaign) -> list[Event]:
    return list(Event.objects.filter(campaign=campaign, type="dm_narration").order_by("seq"))


# --- The lock ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_lock_has_one_holder_until_released_or_stale(campaign, settings):
    assert turn_lock_acquire(campaign_id=campaign.id, holder="a")
    assert not turn_lock_acquire(campaign_id=campaign.id, holder="b")
    turn_lock_release(campaign_id=campaign.id, holder="b")  # not b's to release
    assert not turn_lock_acquire(campaign_id=campaign.id, holder="b")
    turn_lock_release(campaign_id=campaign.id, holder="a")
    assert turn_lock_acquire(campaign_id=campaign.id, holder="b")
    # A holder that died is taken over once its lock is older than TURN_LOCK_SECONDS.
    TurnLock.objects.filter(campaign=campaign).update(
        acquired_at=timezone.now() - timedelta(seconds=settings.TURN_LOCK_SECONDS + 1)
    )
    assert turn_lock_acquire(campaign_id=campaign.id, holder="c")


@pytest.mark.django_db
def test_no_turn_runs_while_another_holds_the_lock(campaign, alice):
    act(campaign, alice, "I wait")
    assert turn_lock_acquire(campaign_id=campaign.id, holder="someone-else")
    assert turns_run_pending(campaign_id=campaign.id) == 0
    assert narrations(campaign) == []
    turn_lock_release(campaign_id=campaign.id, holder="someone-else")
    assert turns_run_pending(campaign_id=campaign.id) == 1


# --- What a turn answers ----------------------------------------------------------------------


@pytest.mark.django_db
def test_one_turn_answers_every_action_since_the_last_narration(campaign, alice, bob):
    act(campaign, alice, "I light a lantern")
    act(campaign, bob, "I draw my sword")
    last = act(campaign, alice, "I open the trapdoor")
    assert turns_run_pending(campaign_id=campaign.id) == 1
    [narration] = narrations(campaign)
    assert narration.payload["through_seq"] == last.seq
    for text in ("I light a lantern", "I draw my sword", "I open the trapdoor"):
        assert text in narration.payload["text"]
    assert turns_run_pending(campaign_id=campaign.id) == 0
    assert turn_run(campaign_id=campaign.id) is None


@pytest.mark.django_db
def test_retries_never_duplicate_an_event(campaign, alice):
    act(campaign, alice, "I attack the goblin")
    assert run_turn.run(campaign_id=str(campaign.id)) == 1
    count = Event.objects.filter(campaign=campaign).count()
    assert run_turn.run(campaign_id=str(campaign.id)) == 0  # a retried task
    [narration] = narrations(campaign)
    with pytest.raises(Conflict):  # a retried commit of the same turn
        turn_commit(
            campaign_id=campaign.id,
            turn_id=narration.payload["turn_id"],
            narration="again",
            options=["x"],
            tool_calls=[{"name": "roll", "args": {"formula": "1d20", "reason": "x"}}],
            through_seq=narration.payload["through_seq"],
        )
    assert Event.objects.filter(campaign=campaign).count() == count


def test_the_task_is_json_serialized_with_time_limits(settings):
    assert run_turn.name == "orchestrator.tasks.run_turn"
    assert run_turn.soft_time_limit == settings.CELERY_TASK_SOFT_TIME_LIMIT
    assert run_turn.time_limit == settings.CELERY_TASK_TIME_LIMIT > run_turn.soft_time_limit
    assert run_turn.acks_late
    assert settings.CELERY_TASK_SERIALIZER == "json" and settings.CELERY_ACCEPT_CONTENT == ["json"]
    # A turn ends by its own deadline first, so its failure can still be recorded.
    assert settings.DM_TURN_DEADLINE_SECONDS < settings.CELERY_TASK_SOFT_TIME_LIMIT
    assert settings.TURN_LOCK_SECONDS > settings.CELERY_TASK_TIME_LIMIT


# --- Coalescing -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_three_actions_during_a_turn_get_exactly_one_follow_up_turn(
    campaign, alice, bob, openai_server
):
    # The first answer streams slowly; the actions below arrive while it does.
    openai_server.script(Answer(chunk_chars=4, delay=0.03))
    first_done = threading.Event()

    def first_action() -> None:
        try:
            # Committing queues the turn; with no event loop it runs right here.
            act(campaign, alice, "I light a lantern")
        finally:
            connection.close()
            first_done.set()

    thread = threading.Thread(target=first_action)
    thread.start()
    deadline = time.monotonic() + 10
    while not openai_server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert openai_server.requests, "the first turn did not start"

    late = [
        act(campaign, bob, "I draw my sword"),
        act(campaign, alice, "I duck"),
        act(campaign, bob, "I shout"),
    ]
    # Their own tasks found the lock taken and left the answer to its holder.
    assert len(openai_server.requests) == 1 and not first_done.is_set()
    thread.join(timeout=20)
    assert first_done.is_set()

    first, follow_up = narrations(campaign)
    assert first.payload["through_seq"] < late[0].seq
    assert follow_up.payload["through_seq"] == late[-1].seq
    assert len(openai_server.requests) == 2
    prompt = str(openai_server.requests[1].body["messages"])
    for text in ("I draw my sword", "I duck", "I shout"):
        assert text in prompt
    assert turns_run_pending(campaign_id=campaign.id) == 0


# --- Failures ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_unknown_provider_fails_the_turn_with_model_error(campaign, alice):
    DMSettings.objects.create(campaign=campaign, provider="nonsense")
    action = act(campaign, alice, "I wait")
    outcome = turn_run(campaign_id=campaign.id)
    [failed] = events_after(campaign_id=campaign.id, after_seq=action.seq)
    assert failed.type == "turn_failed" and failed.payload["code"] == "model_error"
    assert failed.payload["turn_id"] == outcome.turn_id
    assert failed.payload["through_seq"] == action.seq


@pytest.mark.django_db
def test_a_refusal_before_the_model_call_ends_the_turn_with_its_code(
    campaign, alice, openai_server
):
    """Billing is asked before the call (llm.services.model_call): a refusal ends the turn
    with its code, and the model is never called."""
    budget_set(campaign_id=campaign.id, daily_cap_usd="0", hard_stop=True)
    action = act(campaign, alice, "I attack the goblin")
    turn_run(campaign_id=campaign.id)
    failed = events_after(campaign_id=campaign.id, after_seq=action.seq)[0]
    assert failed.type == "turn_failed" and failed.payload["code"] == "budget_exceeded"
    assert openai_server.requests == []  # no model call was made
    assert not Reservation.objects.filter(campaign_id=campaign.id).exists()


@pytest.mark.django_db
def test_usage_is_settled_after_each_model_call(campaign, alice):
    act(campaign, alice, "I search the room")  # a check: rolled first, then narrated
    outcome = turn_run(campaign_id=campaign.id)
    assert outcome.steps == 2 and len(outcome.usage) == 2
    rows = list(ModelUsage.objects.filter(campaign_id=campaign.id))
    assert sorted((r.input_tokens, r.output_tokens) for r in rows) == sorted(
        (u.input_tokens, u.output_tokens) for u in outcome.usage
    )
    for row in rows:
        assert (row.provider, row.model, row.purpose) == ("fake", "fake-dm", "dm_turn")
        assert str(row.turn_id) == outcome.turn_id and str(row.user_id) == str(alice.id)
    assert not Reservation.objects.filter(campaign_id=campaign.id).exists()


# --- Per-campaign settings --------------------------------------------------------------------


@pytest.mark.django_db
def test_dm_settings_are_validated(campaign, settings):
    settings.DM_MODELS_ALLOWED = ["llama3.1:8b"]
    with pytest.raises(DomainError):
        dm_settings_set(campaign_id=campaign.id, provider="skynet")
    with pytest.raises(NotFound):
        dm_settings_set(campaign_id=uuid.uuid4(), provider="fake")
    row = dm_settings_set(campaign_id=campaign.id, provider="openai", model=" llama3.1:8b ")
    assert (row.provider, row.model) == ("openai", "llama3.1:8b")
    assert dm_settings_set(campaign_id=campaign.id).provider == ""


@pytest.mark.django_db
def test_the_dm_settings_are_set_in_the_admin_by_staff_only(
    client, campaign, make_user, django_user_model, settings
):
    settings.DM_MODELS_ALLOWED = ["qwen2.5"]
    url = reverse("admin:orchestrator_dmsettings_add")
    client.force_login(make_user("outsider"))
    assert client.get(url).status_code == 302  # to the admin login
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-Secret-123")
    client.force_login(admin)
    response = client.post(
        url, {"campaign": str(campaign.id), "provider": "openai", "model": "qwen2.5"}
    )
    assert response.status_code == 302, response.content[:2000]
    row = DMSettings.objects.get(campaign=campaign)
    assert (row.provider, row.model) == ("openai", "qwen2.5")
    bad = client.post(
        reverse("admin:orchestrator_dmsettings_change", args=[campaign.id]),
        {"provider": "skynet", "model": ""},
    )
    assert bad.status_code == 200  # the form shows the error
    assert DMSettings.objects.get(campaign=campaign).provider == "openai"


# --- A real Celery worker ---------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_turn_past_its_deadline_fails_once_in_a_worker(campaign, alice, openai_server):
    """The task hands the turn to the worker's turn runner and returns; the turn's own
    deadline (not a Celery time limit) ends a hanging model call, once."""
    openai_server.default = Hang(60)
    env = {
        "DM_MODEL_PROVIDER": "openai",
        "OPENAI_BASE_URL": openai_server.url,
        "DM_TIMEOUT_SECONDS": "30",
        "DM_TURN_DEADLINE_SECONDS": "3",
        "TTS_PROVIDER": "none",
    }
    queue = f"turns-{uuid.uuid4().hex[:8]}"  # nothing left over from other runs
    with celery_worker(queue, **env):
        with turns_deferred():
            action = act(campaign, alice, "I wait for the DM")
        run_turn.apply_async(kwargs={"campaign_id": str(campaign.id)}, queue=queue)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            failed = [
                e
                for e in events_after(campaign_id=campaign.id, after_seq=action.seq)
                if e.type == "turn_failed"
            ]
            if failed:
                break
            time.sleep(0.2)
        time.sleep(1)  # a duplicate would show up now
    events = events_after(campaign_id=campaign.id, after_seq=action.seq)
    assert [e.type for e in events] == ["turn_failed"]
    assert events[0].payload["code"] == "model_timeout"
    assert len(openai_server.requests) == 1
    assert not TurnLock.objects.filter(campaign=campaign).exclude(holder="").exists()


@pytest.mark.django_db
def test_turns_past_the_per_minute_model_allowance_fail_as_rate_limited(campaign, alice, settings):
    settings.MODEL_CALLS_PER_USER_PER_MINUTE = 2
    for text in ("I look left", "I look right"):
        act(campaign, alice, text)
        assert turn_run(campaign_id=campaign.id).failed_code is None
    action = act(campaign, alice, "I look up")
    outcome = turn_run(campaign_id=campaign.id)
    assert outcome.failed_code == "rate_limited"
    [failed] = events_after(campaign_id=campaign.id, after_seq=action.seq)
    assert failed.type == "turn_failed" and failed.payload["code"] == "rate_limited"


@pytest.mark.services
@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_turn_whose_lock_holder_died_is_run_once_the_lock_is_stale(campaign, alice):
    # A worker took the lock and died with it (killed, out of memory).
    assert turn_lock_acquire(campaign_id=campaign.id, holder="a-dead-worker")
    with celery_worker(queues="turns", TURN_LOCK_SECONDS="3", TTS_PROVIDER="none"):
        action = act(campaign, alice, "I wait by the fire")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not narrations(campaign):
            time.sleep(0.2)
    [narration] = narrations(campaign)
    assert narration.payload["through_seq"] == action.seq
    assert not TurnLock.objects.filter(campaign=campaign).exclude(holder="").exists()
