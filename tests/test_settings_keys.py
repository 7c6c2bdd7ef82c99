"""Secrets with DEBUG off: SECRET_KEY, JWT_SIGNING_KEY, INTERNAL_TOOLS_SECRET and every
SECRET_KEY_FALLBACKS entry need 50+ characters of 5+ different ones (what `check --deploy`
asks of SECRET_KEY), and a rotated SECRET_KEY listed in SECRET_KEY_FALLBACKS keeps the
browser sessions it signed. (Development values and unset keys: tests/test_browser_safety.py.)"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from django.core import signing
from django.test import Client, override_settings

from tests import processes
from tests.auth_tools import isolate_limits

pytestmark = pytest.mark.django_db

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
OLD_KEY = ("old-" + ALPHABET)[:50]
NEW_KEY = ("new-" + ALPHABET)[:50]
KEYS = {
    "SECRET_KEY": ("sk-" + ALPHABET)[:50],
    "JWT_SIGNING_KEY": ("jwt-" + ALPHABET)[:50],
    "INTERNAL_TOOLS_SECRET": ("its-" + ALPHABET)[:50],
}


def _production(**overrides: str) -> dict[str, str]:
    env = processes.test_env(
        DEBUG="0",
        ALLOWED_HOSTS="rpgai.example.com",
        CSRF_TRUSTED_ORIGINS="https://rpgai.example.com",
        **KEYS,
    )
    env.pop("SECRET_KEY_FALLBACKS", None)
    env.update(overrides)
    return env


def _python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=processes.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _refused(env: dict[str, str], name: str) -> None:
    result = _python(env, "-c", "import django; django.setup()")
    assert result.returncode != 0, f"{name} was accepted"
    assert "ImproperlyConfigured" in result.stderr and name in result.stderr
    assert "50 characters" in result.stderr


@pytest.mark.parametrize("name", sorted(KEYS))
def test_a_49_character_secret_is_refused_with_debug_off(name: str) -> None:
    _refused(_production(**{name: KEYS[name][:49]}), name)


def test_a_50_character_secret_of_too_few_characters_is_refused() -> None:
    _refused(_production(SECRET_KEY="ab" * 25), "SECRET_KEY")


@pytest.mark.parametrize(
    "fallbacks",
    [
        f"{OLD_KEY},{OLD_KEY[:49]}",
        "dev-only-insecure-secret-key-change-me-0123456789abcdef",
    ],
)
def test_a_weak_fallback_key_is_refused_with_debug_off(fallbacks: str) -> None:
    _refused(_production(SECRET_KEY_FALLBACKS=fallbacks), "SECRET_KEY_FALLBACKS[")


def test_50_character_keys_and_a_fallback_pass_check_deploy() -> None:
    result = _python(
        _production(SECRET_KEY_FALLBACKS=OLD_KEY),
        "manage.py",
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_what_the_old_key_signed_is_still_accepted_when_it_is_a_fallback() -> None:
    """The environment variable reaches Django: a value signed with the old key (a
    session's data is signed the same way) loads in a process given the new key and the
    old one as a fallback, and only then."""
    with override_settings(SECRET_KEY=OLD_KEY, SECRET_KEY_FALLBACKS=[]):
        signed = signing.dumps({"session": "data"}, salt="rotation-test")
    code = (
        "import django; django.setup(); from django.core import signing; "
        f"from django.conf import settings; print(settings.SECRET_KEY_FALLBACKS == [{OLD_KEY!r}]); "
        f"print(signing.loads({signed!r}, salt='rotation-test'))"
    )
    rotated = _python(_production(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=OLD_KEY), "-c", code)
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.split("\n")[:2] == ["True", "{'session': 'data'}"]
    forgotten = _python(_production(SECRET_KEY=NEW_KEY), "-c", code)
    assert forgotten.returncode != 0 and "BadSignature" in forgotten.stderr


def test_a_browser_session_survives_a_key_rotation_with_the_old_key_as_fallback(
    make_user, settings
) -> None:
    isolate_limits(settings)
    make_user("alice", "pw-Secret-123")
    browser = Client()
    with override_settings(SECRET_KEY=OLD_KEY, SECRET_KEY_FALLBACKS=[]):
        logged_in = browser.post("/login/", {"username": "alice", "password": "pw-Secret-123"})
        assert logged_in.status_code == 302
        assert browser.get("/campaigns/").status_code == 200
    with override_settings(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY]):
        page = browser.get("/campaigns/")
        assert page.status_code == 200, "logged out by a rotation with the old key kept"
        assert "alice" in page.content.decode()
    # Without the fallback, a session signed with the old key is worthless.
    stranger = Client()
    with override_settings(SECRET_KEY=OLD_KEY, SECRET_KEY_FALLBACKS=[]):
        stranger.post("/login/", {"username": "alice", "password": "pw-Secret-123"})
    with override_settings(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[]):
        page = stranger.get("/campaigns/")
        assert page.status_code == 302 and "/login/" in page["Location"]


def test_the_dockerfile_build_keys_are_accepted_with_debug_off() -> None:
    """The image's collectstatic step runs with DEBUG=0 and throwaway keys: they must
    pass the same check, or the build fails."""
    text = (processes.ROOT / "Dockerfile").read_text()
    step = re.search(r"RUN DEBUG=0 (.*?)python manage.py collectstatic", text, re.DOTALL)
    assert step is not None, "the Dockerfile lost its collectstatic step"
    assigned = dict(re.findall(r"([A-Z_]+)=(\S+)", step.group(1)))
    assert set(KEYS) <= set(assigned)
    env = processes.test_env(DEBUG="0", **{name: assigned[name] for name in KEYS})
    result = _python(env, "-c", "import django; django.setup()")
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1]
