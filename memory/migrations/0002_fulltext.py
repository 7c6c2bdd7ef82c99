"""Full-text search over passages with the database's own engine.

PostgreSQL: a generated, stored `tsvector` column (heading weighted A, text B, English
stemming) with a GIN index. SQLite: an FTS5 table over memory_passage (external
content, Porter stemming) kept in sync by triggers. Other databases get neither and
retrieval finds nothing there.
"""

from django.db import migrations

POSTGRES_FORWARD = [
    """
    ALTER TABLE memory_passage ADD COLUMN search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig, coalesce(heading, '')), 'A') ||
        setweight(to_tsvector('english'::regconfig, coalesce(text, '')), 'B')
    ) STORED
    """,
    "CREATE INDEX memory_passage_search ON memory_passage USING GIN (search)",
]
POSTGRES_BACKWARD = [
    "DROP INDEX IF EXISTS memory_passage_search",
    "ALTER TABLE memory_passage DROP COLUMN IF EXISTS search",
]

SQLITE_FORWARD = [
    """
    CREATE VIRTUAL TABLE memory_passage_fts USING fts5(
        heading, text,
        content='memory_passage', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2'
    )
    """,
    """
    CREATE TRIGGER memory_passage_fts_insert AFTER INSERT ON memory_passage BEGIN
        INSERT INTO memory_passage_fts(rowid, heading, text)
        VALUES (new.id, new.heading, new.text);
    END
    """,
    """
    CREATE TRIGGER memory_passage_fts_delete AFTER DELETE ON memory_passage BEGIN
        INSERT INTO memory_passage_fts(memory_passage_fts, rowid, heading, text)
        VALUES ('delete', old.id, old.heading, old.text);
    END
    """,
    """
    CREATE TRIGGER memory_passage_fts_update AFTER UPDATE ON memory_passage BEGIN
        INSERT INTO memory_passage_fts(memory_passage_fts, rowid, heading, text)
        VALUES ('delete', old.id, old.heading, old.text);
        INSERT INTO memory_passage_fts(rowid, heading, text)
        VALUES (new.id, new.heading, new.text);
    END
    """,
    # Passages that already exist (none on a fresh database) go into the index too.
    "INSERT INTO memory_passage_fts(memory_passage_fts) VALUES ('rebuild')",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS memory_passage_fts_insert",
    "DROP TRIGGER IF EXISTS memory_passage_fts_delete",
    "DROP TRIGGER IF EXISTS memory_passage_fts_update",
    "DROP TABLE IF EXISTS memory_passage_fts",
]


def _run(statements: dict[str, list[str]]):
    def run(apps, schema_editor):
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("memory", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRES_FORWARD, "sqlite": SQLITE_FORWARD}),
            _run({"postgresql": POSTGRES_BACKWARD, "sqlite": SQLITE_BACKWARD}),
        )
    ]
