"""Keep access tokens out of the logs.

Browsers pass their access token in the WebSocket URL (`?token=...`), and a path or a
request line can end up in any log line. `scrub` removes query-string credentials,
bearer headers and anything shaped like a JWT (rpgai.logging applies it to every line);
`install_query_free_access_log` keeps query strings out of daphne's access log, which
is written straight to a stream, not through logging.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

_PATTERNS = [
    # token=..., access=..., refresh=... in query strings and form bodies
    (
        re.compile(r"(?i)\b((?:access_?|refresh_?)?token|access|refresh)=[^&\s\"'#]+"),
        r"\1=" + REDACTED,
    ),
    # Authorization: Bearer <token>
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
    # a password-reset link's token: /password-reset/<uidb64>/<token>/
    (re.compile(r"(/password-reset/[^/\s]+/)[^/\s\"'?#]+"), r"\1" + REDACTED),
    # a JWT anywhere else (header.payload.signature, base64url)
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
]


def scrub(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def install_query_free_access_log() -> None:
    """daphne's command line writes its access log with `daphne.access.AccessLogGenerator`,
    whose HTTP lines carry the whole request URI, query string included (its WebSocket
    lines carry the path only). daphne loads the application before it builds that
    logger, so replacing the class here, when rpgai.asgi is imported, takes effect."""
    try:
        from daphne import access, cli
    except ImportError:  # served by something else
        return
    if getattr(cli.AccessLogGenerator, "drops_query_strings", False):
        return
    base = access.AccessLogGenerator

    class QueryFreeAccessLog(base):
        drops_query_strings = True

        def __call__(self, protocol: str, action: str, details: dict) -> None:
            if isinstance(details.get("path"), str):
                details = {**details, "path": scrub(details["path"].split("?", 1)[0])}
            super().__call__(protocol, action, details)

    cli.AccessLogGenerator = QueryFreeAccessLog
