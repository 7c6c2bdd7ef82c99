"""Passages get their vector (float32 bytes) and the id of the model that made it.

Both columns are nullable with no default, so SQLite adds them with ALTER TABLE ADD
COLUMN (no table rebuild): the FTS5 triggers of 0002_fulltext stay. Its update trigger
is narrowed to the indexed columns, so writing a vector does not re-index the passage's
text.
"""

from django.db import migrations, models

SQLITE_FORWARD = [
    "DROP TRIGGER IF EXISTS memory_passage_fts_update",
    """
    CREATE TRIGGER memory_passage_fts_update AFTER UPDATE OF heading, text ON memory_passage
    BEGIN
        INSERT INTO memory_passage_fts(memory_passage_fts, rowid, heading, text)
        VALUES ('delete', old.id, old.heading, old.text);
        INSERT INTO memory_passage_fts(rowid, heading, text)
        VALUES (new.id, new.heading, new.text);
    END
    """,
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS memory_passage_fts_update",
    """
    CREATE TRIGGER memory_passage_fts_update AFTER UPDATE ON memory_passage BEGIN
        INSERT INTO memory_passage_fts(memory_passage_fts, rowid, heading, text)
        VALUES ('delete', old.id, old.heading, old.text);
        INSERT INTO memory_passage_fts(rowid, heading, text)
        VALUES (new.id, new.heading, new.text);
    END
    """,
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "sqlite":
            for sql in statements:
                schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("memory", "0004_npc_memory_names")]

    operations = [
        migrations.AddField(
            model_name="passage",
            name="embedding",
            field=models.BinaryField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="passage",
            name="embedding_model",
            field=models.CharField(blank=True, editable=False, max_length=64, null=True),
        ),
        migrations.RunPython(_run(SQLITE_FORWARD), _run(SQLITE_BACKWARD)),
    ]
