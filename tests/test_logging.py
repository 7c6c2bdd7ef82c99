"""Logs: structlog lines, JSON in production and readable in development, each with the
request id, and never a password, token or key in any of them."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog

from rpgai.logging import formatter
from rpgai.request_id import request_id_bound
from tests import processes

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoiYWxpY2UifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
SECRETS = [
    "hunter2-password",
    "tok-3f9a77c1",
    "sk-live-0123456789abcdef",
    "refresh-9c1d",
    JWT,
    "redispass77",
    "basic-credential-xyz",
    "cjk8qz-4b1f6e0a9d3c2e7f5a8b",
]


def _emit_secrets() -> None:
    """Log credentials every way the code base might: structlog keys, nested dicts,
    URLs with ?token=, stdlib %-formatting of a dict, headers, tracebacks."""
    slog = structlog.get_logger("tests.secrets")
    slog.info(
        "login attempt",
        payload={
            "username": "alice",
            "password": "hunter2-password",
            "nested": [{"access_token": "tok-3f9a77c1"}],
            "input_tokens": 812,
        },
        url=f"wss://play.example/ws/campaigns/1/?token={JWT}&x=1",
        OPENAI_API_KEY="sk-live-0123456789abcdef",
        refresh="refresh-9c1d",
    )
    plain = logging.getLogger("tests.secrets.stdlib")
    plain.warning(
        "request %s to %s with %s",
        {"password": "hunter2-password", "token": "tok-3f9a77c1"},
        "https://api.example/v1?api_key=sk-live-0123456789abcdef&page=2",
        "Authorization: Basic basic-credential-xyz",
    )
    plain.info(
        "broker redis://:redispass77@redis:6379/0 is back;"
        " GET /password-reset/MQ/cjk8qz-4b1f6e0a9d3c2e7f5a8b/ 302"
    )
    try:
        raise RuntimeError(f"upstream refused Bearer {JWT}")
    except RuntimeError:
        plain.exception("model call failed")


def _capture(*, json_lines: bool) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(json=json_lines, colors=False))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    yield from _capture(json_lines=True)


@pytest.fixture
def console_logs() -> Iterator[io.StringIO]:
    yield from _capture(json_lines=False)


def test_no_secret_reaches_a_json_line(json_logs):
    _emit_secrets()
    output = json_logs.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 4
    for secret in SECRETS:
        assert secret not in output, secret
    assert "[redacted]" in output
    # What is not a secret stays readable.
    first = lines[0]
    assert first["payload"]["username"] == "alice"
    assert first["payload"]["input_tokens"] == 812
    assert first["url"].startswith("wss://play.example/ws/campaigns/1/?token=[redacted]")
    assert "page=2" in lines[1]["event"]
    assert "redis://:[redacted]@redis:6379/0" in lines[2]["event"]
    assert "/password-reset/MQ/[redacted]/" in lines[2]["event"]
    assert "Traceback" in lines[3]["exception"]


def test_no_secret_reaches_a_console_line(console_logs):
    _emit_secrets()
    output = console_logs.getvalue()
    assert "login attempt" in output and "Traceback" in output
    for secret in SECRETS:
        assert secret not in output, secret


def test_a_console_traceback_shows_no_locals(console_logs):
    # A frame's locals (a prompt, a schema, a key in an unexpected shape) stay out.
    def call_model(api_settings: dict) -> None:
        raise TimeoutError("the model did not answer")

    header = "X-Custom-Auth opaque-value-" + str(4711)  # a local, not on a source line
    try:
        call_model({"header": header})
    except TimeoutError:
        logging.getLogger("tests.console").exception("turn failed")
    output = console_logs.getvalue()
    assert "Traceback" in output and "call_model" in output
    assert "opaque-value-4711" not in output


def test_json_lines_carry_time_level_logger_and_request_id(json_logs):
    with request_id_bound("req-42"):
        structlog.get_logger("tests.fields").warning("something happened", seq=7)
        logging.getLogger("tests.fields.stdlib").error("plain %s", "too")
    structlog.get_logger("tests.fields").info("outside")
    first, second, third = (json.loads(line) for line in json_logs.getvalue().splitlines())
    assert first["event"] == "something happened" and first["seq"] == 7
    assert first["level"] == "warning" and first["logger"] == "tests.fields"
    assert first["timestamp"].endswith("Z")
    assert first["request_id"] == second["request_id"] == "req-42"
    assert second["event"] == "plain too" and second["level"] == "error"
    assert "request_id" not in third


def test_the_configured_handler_is_structured_and_scrubbed(settings):
    """The LOGGING setting itself (not only our test handler) renders and scrubs."""
    assert settings.LOGGING_CONFIG == "rpgai.logging.configure"
    [handler] = [h for h in logging.getLogger().handlers if h.get_name() == "console"]
    record = logging.LogRecord("tests", logging.INFO, __file__, 1, "join ?token=%s", (JWT,), None)
    rendered = handler.formatter.format(record)
    assert JWT not in rendered and "token=[redacted]" in rendered


def test_production_processes_write_json_lines_without_secrets():
    """A process started with DEBUG off logs JSON on stderr by default, scrubbed."""
    code = (
        "import django, logging, structlog; django.setup();"
        "structlog.get_logger('probe').info('hello', password='hunter2-password');"
        f"logging.getLogger('probe').info('url ?token={JWT}')"
    )
    env = processes.test_env(
        DEBUG="0",
        SECRET_KEY="s" * 40 + "-0123456789",
        JWT_SIGNING_KEY="j" * 40 + "-0123456789",
        INTERNAL_TOOLS_SECRET="i" * 40 + "-0123456789",
    )
    env.pop("LOG_FORMAT", None)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=processes.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [line["event"] for line in lines][-2:] == ["hello", "url ?token=[redacted]"]
    assert "hunter2-password" not in result.stderr and JWT not in result.stderr


def test_a_bad_log_format_is_refused_at_startup():
    env = processes.test_env(LOG_FORMAT="xml")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=processes.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "LOG_FORMAT must be json or console" in result.stderr
