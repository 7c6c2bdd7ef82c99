"""The event log is append-only in the database itself, not only in Python.

Triggers refuse UPDATE and DELETE of `campaigns_event` on SQLite and PostgreSQL. The one
sanctioned exception is purging a whole campaign (`campaign_delete`), which opens a
purge window: on PostgreSQL a transaction-local setting, on SQLite a function the
connection defines, which answers from a context variable of the calling thread. A
connection that lacks the function (the sqlite3 shell) cannot delete events at all.

The triggers are (re)made after every `migrate`, because SQLite rebuilds a table, and
drops its triggers, whenever a migration alters it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from django.db import connection as default_connection
from django.db.backends.base.base import BaseDatabaseWrapper

_purge_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "rpgai_event_purge", default=False
)

TABLE = "campaigns_event"
MESSAGE = "campaign events are append-only"


def append_only_statements(table: str, message: str) -> dict[str, list[str]]:
    """The trigger statements, per database vendor, that make `table` append-only: UPDATE
    always refused, DELETE refused outside a purge window (`purge_window`). Any table that
    must never change (the event log, model usage) is protected by the same triggers."""
    return {
        "sqlite": [
            f"""CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
            BEGIN SELECT RAISE(ABORT, '{message}: UPDATE refused'); END""",
            f"""CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
            WHEN NOT rpgai_event_purge_allowed()
            BEGIN SELECT RAISE(ABORT, '{message}: DELETE refused'); END""",
        ],
        "postgresql": [
            f"""CREATE OR REPLACE FUNCTION {table}_immutable() RETURNS trigger AS $$
            BEGIN
                IF TG_OP = 'DELETE' AND current_setting('rpgai.event_purge', true) = 'on' THEN
                    RETURN OLD;
                END IF;
                RAISE EXCEPTION '{message}: % refused', TG_OP USING ERRCODE = 'restrict_violation';
            END;
            $$ LANGUAGE plpgsql""",
            f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}",
            f"""CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION {table}_immutable()""",
        ],
    }


def append_only_ensure(table: str, message: str, using: str = "default") -> None:
    """(Re)make the append-only triggers of `table`, if the table exists yet."""
    from django.db import connections

    connection = connections[using]
    if table not in connection.introspection.table_names():
        return
    with connection.cursor() as cursor:
        for statement in append_only_statements(table, message).get(connection.vendor, []):
            cursor.execute(statement)


def register_sqlite_functions(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function(
            "rpgai_event_purge_allowed", 0, lambda: int(_purge_allowed.get())
        )


def ensure_event_triggers(using: str = "default", **kwargs: Any) -> None:
    """post_migrate receiver: the event log's triggers."""
    append_only_ensure(TABLE, MESSAGE, using)


@contextlib.contextmanager
def purge_window(connection: BaseDatabaseWrapper = default_connection) -> Iterator[None]:
    """Allow DELETE of events for the current transaction (PostgreSQL) or thread (SQLite)."""
    token = _purge_allowed.set(True)
    try:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('rpgai.event_purge', 'on', true)")
        yield
    finally:
        _purge_allowed.reset(token)
        if connection.vendor == "postgresql" and connection.in_atomic_block:
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('rpgai.event_purge', 'off', true)")
