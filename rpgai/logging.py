"""Logging: structlog over the standard library, JSON lines in production and readable
lines in development, with no secret in any of them.

Every line, from structlog (`structlog.get_logger(__name__)`) or from a plain
`logging.getLogger(__name__)` (Django, Celery, our older modules, libraries), goes
through the same formatter: it gets a timestamp, level, logger name and the current
request id (`rpgai.request_id`), then `scrub_secrets` removes credentials, then it is
rendered. Settings:

    LOGGING_CONFIG = "rpgai.logging.configure"
    LOGGING = rpgai.logging.logging_settings(json=..., level=...)

What `scrub_secrets` removes (the value becomes "[redacted]"):
- values under keys that name a secret (`password`, `token`, `access_token`,
  `api_key`, `secret`, `authorization`, `cookie`, ...), at any depth of a dict or list;
  counts such as `input_tokens` are not secrets and stay;
- in any text: `token=...`-style query and form parameters, `Bearer ...`, JWTs,
  `'password': '...'`-style pairs in printed dicts, and passwords in URLs
  (`redis://:pw@host`, `postgres://user:pw@host`).
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
from collections.abc import Callable
from typing import Any

import structlog

from rpgai.log_filters import scrub as scrub_query_tokens
from rpgai.request_id import add_request_id

REDACTED = "[redacted]"
_MAX_DEPTH = 8

# A key names a secret when its last word is one of these (case-insensitive), so that
# `access_token` and `OPENAI_API_KEY` are redacted but `input_tokens` is not.
_SECRET_KEY = re.compile(
    r"(?i)(?:^|[_\-.])(?:password|passwd|pwd|pass|secret|token|jwt|access|refresh|"
    r"api_?key|secret_?key|signing_?key|private_?key|authorization|auth|cookie|"
    r"credentials?|session_?key|sessionid|signature|sig|csrf_?token|csrfmiddlewaretoken)$"
)
_SECRET_WORDS = (
    r"[A-Za-z0-9_]*(?:token|password|passwd|secret|api_?key|jwt|signature)|access|refresh|pwd"
)
_TEXT_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # token=..., access_token=..., password=..., api_key=... in query strings and bodies
    (
        re.compile(rf"(?i)(?<![A-Za-z0-9_])({_SECRET_WORDS})=[^&\s\"'#,;)]+"),
        r"\1=" + REDACTED,
    ),
    # 'password': 'x' and "token": "x" in printed dicts and JSON
    (
        re.compile(
            rf"(?i)([\"'])({_SECRET_WORDS}|authorization|cookie)\1(\s*[:=]\s*)"
            r"([\"'])(?:\\.|(?!\4).)*\4"
        ),
        r"\1\2\1\3\4" + REDACTED + r"\4",
    ),
    # Authorization: <scheme> <credential>, and a bare "Bearer <credential>"
    (
        re.compile(r"(?i)\b(authorization\s*[:=]\s*)(?:[A-Za-z]+\s+)?[^\s,;\"']+"),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + REDACTED),
    # a password in a URL: scheme://user:password@host
    (
        re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s\"']*:)[^@\s/\"']+@"),
        r"\1" + REDACTED + "@",
    ),
    # a JWT anywhere (header.payload.signature, base64url)
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
]


def scrub_text(text: str) -> str:
    """`text` with every credential pattern replaced by "[redacted]"."""
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    # The security module's own patterns too, so that anything it catches we catch.
    return scrub_query_tokens(text)


def _scrub_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {
            key: (
                REDACTED
                if isinstance(key, str) and _SECRET_KEY.search(key) and item not in (None, "")
                else _scrub_value(item, depth + 1)
            )
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrub_value(item, depth + 1) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return scrub_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    # Anything else is rendered by str() or repr() later: scrub that text now.
    return scrub_text(str(value))


_KEEP = frozenset({"_record", "_from_structlog", "exc_info", "stack_info", "timestamp", "level"})


def scrub_secrets(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: no password, token or key survives into the rendered line."""
    for key, value in list(event_dict.items()):
        if key in _KEEP:
            continue
        if key != "event" and _SECRET_KEY.search(key) and value not in (None, ""):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub_value(value)
    return event_dict


def _scrub_rendered(logger: Any, method_name: str, rendered: Any) -> Any:
    """The last step: the rendered line once more (tracebacks are rendered late)."""
    return scrub_text(rendered) if isinstance(rendered, str) else rendered


def _shared_processors() -> list[Callable[..., Any]]:
    """What every line gets, from structlog or from the standard library."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_request_id,
    ]


def formatter(*, json: bool = True, colors: bool | None = None) -> logging.Formatter:
    """The logging.Formatter of every handler: JSON lines, or readable console lines."""
    renderer: Callable[..., Any]
    if json:
        final: list[Callable[..., Any]] = [
            structlog.processors.format_exc_info,
            scrub_secrets,
            structlog.processors.JSONRenderer(default=str),
        ]
    else:
        if colors is None:
            colors = sys.stderr.isatty()
        # Plain tracebacks: structlog's default (rich, when installed) prints every frame's
        # locals, which held a whole prompt and schema per frame (thousands of lines for one
        # timed-out turn) and may hold what a secret scrubber does not recognise.
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        )
        final = [scrub_secrets, renderer]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *final,
            _scrub_rendered,
        ],
    )


def logging_settings(*, json: bool, level: str = "INFO") -> dict[str, Any]:
    """The LOGGING setting: one console handler (stderr) with our formatter."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": "rpgai.logging.formatter", "json": json}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's own console handler (DEBUG only) would bypass ours.
            "django": {"handlers": ["console"], "level": level, "propagate": False},
            "django.db.backends": {"level": "INFO"},
        },
    }


def configure_structlog() -> None:
    """structlog hands its event dicts to the standard library (and so to our formatter)."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def configure(logging_config: dict[str, Any]) -> None:
    """LOGGING_CONFIG: Django calls this with LOGGING at setup (web, commands, Celery)."""
    configure_structlog()
    logging.config.dictConfig(logging_config)
