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

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS campaigns_event_no_update BEFORE UPDATE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, '{MESSAGE}: UPDATE refused'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS campaigns_event_no_delete BEFORE DELETE ON {TABLE}
    WHEN NOT rpgai_event_purge_allowed()
    BEGIN SELECT RAISE(ABORT, '{MESSAGE}: DELETE refused'); END""",
]

POSTGRES_TRIGGERS = [
    f"""CREATE OR REPLACE FUNCTION campaigns_event_immutable() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'DELETE' AND current_setting('rpgai.event_purge', true) = 'on' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION '{MESSAGE}: % refused', TG_OP USING ERRCODE = 'restrict_violation';
    END;
    $$ LANGUAGE plpgsql""",
    f"DROP TRIGGER IF EXISTS campaigns_event_immutable ON {TABLE}",
    f"""CREATE TRIGGER campaigns_event_immutable BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION campaigns_event_immutable()""",
]


def register_sqlite_functions(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function(
            "rpgai_event_purge_allowed", 0, lambda: int(_purge_allowed.get())
        )


def ensure_event_triggers(using: str = "default", **kwargs: Any) -> None:
    from django.db import connections

    connection = connections[using]
    if TABLE not in connection.introspection.table_names():
        return
    statements = {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRES_TRIGGERS}.get(
        connection.vendor, []
    )
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


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
