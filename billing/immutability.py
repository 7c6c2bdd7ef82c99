"""Usage rows are append-only in the database itself, like the campaign event log.

Triggers refuse UPDATE and DELETE of `billing_modelusage` on SQLite and PostgreSQL. The
only DELETE let through is inside `campaigns.immutability.purge_window()` (the test
suite's flush uses it); nothing in the application opens one for usage. The triggers
are (re)made after every `migrate`, because SQLite drops a table's triggers whenever a
migration rebuilds it.
"""

from __future__ import annotations

from typing import Any

TABLE = "billing_modelusage"
MESSAGE = "model usage is append-only"

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS billing_modelusage_no_update BEFORE UPDATE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, '{MESSAGE}: UPDATE refused'); END""",
    # rpgai_event_purge_allowed() is defined on every connection by campaigns.immutability.
    f"""CREATE TRIGGER IF NOT EXISTS billing_modelusage_no_delete BEFORE DELETE ON {TABLE}
    WHEN NOT rpgai_event_purge_allowed()
    BEGIN SELECT RAISE(ABORT, '{MESSAGE}: DELETE refused'); END""",
]

POSTGRES_TRIGGERS = [
    f"""CREATE OR REPLACE FUNCTION billing_modelusage_immutable() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'DELETE' AND current_setting('rpgai.event_purge', true) = 'on' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION '{MESSAGE}: % refused', TG_OP USING ERRCODE = 'restrict_violation';
    END;
    $$ LANGUAGE plpgsql""",
    f"DROP TRIGGER IF EXISTS billing_modelusage_immutable ON {TABLE}",
    f"""CREATE TRIGGER billing_modelusage_immutable BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION billing_modelusage_immutable()""",
]


def ensure_usage_triggers(using: str = "default", **kwargs: Any) -> None:
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
