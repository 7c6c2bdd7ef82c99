"""Shared fixtures. The default run is embedded (SQLite, in-memory layer, fake model);
with DATABASE_URL and REDIS_URL set, the same suite runs on PostgreSQL and Redis and
the `services` tests run too."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings

from campaigns.immutability import purge_window

SERVICES_READY = bool(os.environ.get("DATABASE_URL", "").startswith("postgres")) and bool(
    os.environ.get("REDIS_URL")
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SERVICES_READY:
        return
    skip = pytest.mark.skip(
        reason="SERVICE TEST SKIPPED: set DATABASE_URL=postgres://... and REDIS_URL=redis://... "
        "(.ci/run does) to run it against PostgreSQL and Redis"
    )
    for item in items:
        if "services" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    layer = "redis" if settings.REDIS_URL else "in-memory"
    note = "" if SERVICES_READY else "  ** service tests will be SKIPPED **"
    return f"rpgai: database={db} channel_layer={layer}{note}"


@pytest.fixture(autouse=True, scope="session")
def _flush_may_purge_events() -> Any:
    """Test teardown flushes tables with DELETE on SQLite; the event triggers allow it
    only inside a purge window, as `campaign_delete` does."""
    from django.core.management.commands import flush

    original = flush.Command.handle

    def handle(self: Any, *args: Any, **kwargs: Any) -> Any:
        with purge_window():
            return original(self, *args, **kwargs)

    flush.Command.handle = handle
    yield
    flush.Command.handle = original


@pytest.fixture(autouse=True, scope="session")
def _db_threads_stopped_before_the_test_database_goes(django_db_setup: Any) -> Any:
    """rpgai.aio's database threads keep their connections open: close them before
    pytest-django drops the test database (PostgreSQL refuses while they are open)."""
    yield
    from rpgai.aio import db_threads_stop

    db_threads_stop()


@pytest.fixture(autouse=True)
def _tasks_in_process(request: pytest.FixtureRequest, settings: Any) -> None:
    """Background tasks run in this process, also on Redis, unless a test runs a real
    Celery worker (marker `celery_worker`)."""
    if "celery_worker" not in request.keywords:
        settings.CELERY_TASK_ALWAYS_EAGER = True


@pytest.fixture(autouse=True)
def _speech_off(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No speech unless a test asks for it (the voice tests set TTS_PROVIDER): other
    tests' event lists stay what they assert, and none of them waits for synthesis."""
    settings.TTS_PROVIDER = "none"
    monkeypatch.setenv("TTS_PROVIDER", "none")  # in the servers and workers tests start too


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> Any:
    """Each test gets its own channel-layer instance. channels_redis binds its locks to
    the event loop that first used them; a consumer a test left behind must not leave a
    lock tied to a dead loop for the next test."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """Real password hashing costs ~0.3 s a user; tests do not need its strength."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_user(django_user_model: Any) -> Callable[..., Any]:
    def make(username: str | None = None, password: str = "pw-Secret-123") -> Any:
        return django_user_model.objects.create_user(
            username=username or f"user-{uuid.uuid4().hex[:8]}", password=password
        )

    return make


@pytest.fixture
def gm(make_user: Callable[..., Any]) -> Any:
    return make_user("gm")


@pytest.fixture
def campaign(gm: Any) -> Any:
    from campaigns.services import campaign_create

    return campaign_create(
        name="The Sunken Crown",
        edition="5e",
        creator=gm,
        scene={"location": "The Drowned Lantern inn", "description": "Rain on the shutters."},
    )


@pytest.fixture
def join(campaign: Any) -> Callable[..., Any]:
    from campaigns.services import campaign_join

    def do_join(user: Any, name: str | None = None) -> Any:
        return campaign_join(invite_code=campaign.invite_code, user=user, display_name=name)

    return do_join


@pytest.fixture
def alice(make_user: Callable[..., Any], join: Callable[..., Any]) -> Any:
    """A player of `campaign` (older modules still define their own; issue 24 merges them)."""
    user = make_user("alice")
    join(user, "Alice")
    return user


@pytest.fixture
def bob(make_user: Callable[..., Any], join: Callable[..., Any]) -> Any:
    user = make_user("bob")
    join(user, "Bob")
    return user


@pytest.fixture
def openai_server(settings: Any) -> Any:
    """A local OpenAI-compatible server (tests/openai_server.py) the `openai` provider is
    pointed at (older modules still define their own; issue 24 merges them)."""
    from tests.openai_server import serving

    with serving(settings) as server:
        yield server


@pytest.fixture
def act() -> Callable[..., Any]:
    """`act(campaign, user, text)`: the member's player_action, with no turn asked for
    (the test runs the turn itself, with `turn_run`)."""
    from campaigns.selectors import membership_get
    from campaigns.services import player_action_submit
    from orchestrator.receivers import turns_deferred

    def submit(campaign: Any, user: Any, text: str) -> Any:
        membership = membership_get(campaign_id=campaign.id, user_id=user.id)
        with turns_deferred():
            return player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)

    return submit
