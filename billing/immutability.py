"""Usage rows are append-only in the database itself, like the campaign event log.

Triggers refuse UPDATE and DELETE of `billing_modelusage` on SQLite and PostgreSQL. The
only DELETE let through is inside `campaigns.immutability.purge_window()` (the test
suite's flush uses it); nothing in the application opens one for usage. The triggers
are (re)made after every `migrate`, because SQLite drops a table's triggers whenever a
migration rebuilds it.
"""

from __future__ import annotations

from typing import Any

from campaigns.immutability import append_only_ensure

TABLE = "billing_modelusage"
MESSAGE = "model usage is append-only"


def ensure_usage_triggers(using: str = "default", **kwargs: Any) -> None:
    """post_migrate receiver: the same append-only triggers as the event log's."""
    append_only_ensure(TABLE, MESSAGE, using)
