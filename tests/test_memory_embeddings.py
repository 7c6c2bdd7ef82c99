"""The offline embedder (memory/embeddings.py) and the background indexing of passages
(memory/vectors.py, memory.tasks.embed_passages): the model runs with no network, its
files are checked, vectors are stored as float32 bytes, the work goes to the CPU
worker's queue, MEMORY_EMBEDDINGS=off turns it all off, and the GM sees the progress."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from memory import embeddings
from memory.documents import document_create
from memory.models import Passage
from memory.tasks import embed_passages
from memory.vectors import indexed_counts, indexing_text, passages_embed
from rpgai.celery import app
from tests.auth_tools import isolate_limits

pytestmark = pytest.mark.django_db

# Forty short sections: more than one committed batch of vectors (COMMIT_BATCH is 32).
MANY = "\n\n".join(
    f"## Street {n}\n\nThe lamplighter of street {n} keeps a lantern of a colour of its own."
    for n in range(40)
)


@pytest.fixture(autouse=True)
def _limits(settings):
    isolate_limits(settings)


@pytest.fixture
def no_network(monkeypatch):
    """Every way out of the process fails: connecting, resolving names."""

    def refused(*args, **kwargs):
        raise OSError("the network is unreachable in this test")

    monkeypatch.setattr(socket.socket, "connect", refused)
    monkeypatch.setattr(socket.socket, "connect_ex", refused)
    monkeypatch.setattr(socket, "create_connection", refused)
    monkeypatch.setattr(socket, "getaddrinfo", refused)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 9))


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


# --- The model ----------------------------------------------------------------------------------


def test_the_model_loads_and_embeds_with_the_network_unreachable(no_network):
    # A fresh embedder, not the process's: loading is what must not reach out.
    model = embeddings.MiniLmEmbedder()
    vectors = model.embed(
        [
            "How do I pay to get across the river?",
            "The ferryman takes no coin for the crossing: he asks each passenger for a story.",
            "Spells cast underwater with the fire descriptor fizzle harmlessly.",
        ]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Meaning, not words: the question is nearer the fare than the spell, with no word shared.
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.1
    # The same text gives the same vector, alone or in a batch of others (padding ignored).
    alone = model.embed(["How do I pay to get across the river?"])[0]
    assert np.allclose(alone, vectors[0], atol=1e-5)


def test_the_tokenizer_file_is_checked_against_its_hash(tmp_path):
    changed = tmp_path / "tokenizer.json"
    changed.write_bytes(embeddings.TOKENIZER_FILE.read_bytes().replace(b'"[UNK]"', b'"[UNX]"', 1))
    with pytest.raises(embeddings.EmbedderUnavailable, match="sha256"):
        embeddings.MiniLmEmbedder(tokenizer_path=changed)
    with pytest.raises(embeddings.EmbedderUnavailable, match="missing"):
        embeddings.MiniLmEmbedder(tokenizer_path=Path(tmp_path / "nothing.json"))


def test_the_setting_picks_the_embedder(settings):
    settings.MEMORY_EMBEDDINGS = "off"
    assert embeddings.embedder() is None and embeddings.embedder_model_id() is None
    settings.MEMORY_EMBEDDINGS = "minilm"
    assert embeddings.embedder() is embeddings.embedder()  # loaded once per process
    settings.MEMORY_EMBEDDINGS = "word2vec"
    with pytest.raises(Exception, match="MEMORY_EMBEDDINGS must be one of"):
        embeddings.embedder()


# --- Indexing -----------------------------------------------------------------------------------


def test_an_upload_queues_the_embedding_of_its_passages_on_the_cpu_queue(
    campaign, gm, settings, django_capture_on_commit_callbacks
):
    # The task goes to the queue of the worker that speaks, never to the turns worker's:
    # routed as Celery routes it when the task is sent (CELERY_TASK_ROUTES).
    route = app.amqp.router.route({}, embed_passages.name, args=(), kwargs={})
    assert route["queue"].name == settings.MEMORY_EMBEDDINGS_QUEUE == "default"
    turns = app.amqp.router.route({}, "orchestrator.tasks.run_turn", args=(), kwargs={})
    assert route["queue"].name != turns["queue"].name

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        created = document_create(
            campaign_id=campaign.id, text=MANY, title="Streets", uploaded_by=gm
        )
    assert callbacks  # queued once the passages were committed, not before
    rows = Passage.objects.filter(document=created.document)
    assert rows.count() == 40
    for blob, model_id in rows.values_list("embedding", "embedding_model"):
        assert model_id == embeddings.MiniLmEmbedder.model_id
        vector = np.frombuffer(bytes(blob), dtype="<f4")
        assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-4


def test_indexing_progress_is_shown_to_the_gm_while_passages_are_embedded(
    campaign, gm, make_user, join, settings
):
    # The upload's task is not run (its on_commit callback is not executed): nothing yet.
    document = document_create(
        campaign_id=campaign.id, text=MANY, title="Streets", uploaded_by=gm
    ).document
    url = f"/api/campaigns/{campaign.id}/documents"
    listed = client_for(gm).get(url).json()[0]
    assert listed["passages"] == 40 and listed["passages_indexed"] == 0
    assert listed["indexing"] == "indexing 0 of 40 passages"

    # One task's worth of work (a time slice of 0 s stops after one committed batch).
    run = passages_embed(document_id=document.id, seconds=0)
    assert (run.embedded, run.remaining) == (32, 8)
    listed = client_for(gm).get(url).json()[0]
    assert (listed["passages_indexed"], listed["indexing"]) == (32, "indexing 32 of 40 passages")
    page = client_for_gm_site(gm).get("/gm/memory/document/")
    assert page.status_code == 200 and "indexing 32 of 40 passages" in page.content.decode()

    # The task goes on where the last stopped, and queues the rest of its document itself.
    settings.MEMORY_EMBED_SECONDS_PER_TASK = 0
    Passage.objects.filter(document=document, ordinal__gt=30).update(
        embedding=None, embedding_model=None
    )
    assert embed_passages.run(document_id=str(document.id)) == 10
    assert indexed_counts(document_ids=[document.id]) == {document.id: 40}
    listed = client_for(gm).get(url).json()[0]
    assert (listed["passages_indexed"], listed["indexing"]) == (40, "indexed")
    # A player sees the same progress (nothing secret in it).
    player = make_user("pat")
    join(player, "Pat")
    assert client_for(player).get(url).json()[0]["indexing"] == "indexed"
    page = client_for_gm_site(gm).get(f"/gm/memory/document/{document.id}/change/")
    assert page.status_code == 200 and "indexed" in page.content.decode()


def client_for_gm_site(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def test_with_embeddings_off_nothing_is_embedded_or_queued(
    campaign, gm, settings, django_capture_on_commit_callbacks
):
    settings.MEMORY_EMBEDDINGS = "off"
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        created = document_create(campaign_id=campaign.id, text=MANY, uploaded_by=gm)
    assert not callbacks
    assert not Passage.objects.filter(embedding__isnull=False).exists()
    assert passages_embed(document_id=created.document.id).embedded == 0
    listed = client_for(gm).get(f"/api/campaigns/{campaign.id}/documents").json()[0]
    assert listed["passages_indexed"] is None
    assert listed["indexing"] == "full text only (embeddings are off)"


def test_the_command_embeds_what_was_uploaded_before(campaign, gm, settings):
    settings.MEMORY_EMBEDDINGS = "off"
    document_create(campaign_id=campaign.id, text=MANY, uploaded_by=gm)
    with pytest.raises(CommandError, match="MEMORY_EMBEDDINGS is off"):
        call_command("memory_embed")
    settings.MEMORY_EMBEDDINGS = "minilm"
    out = io.StringIO()
    call_command("memory_embed", "--campaign", str(campaign.id), "--now", stdout=out)
    assert "40 passages embedded" in out.getvalue() and "1 documents embedded" in out.getvalue()
    assert not Passage.objects.filter(embedding__isnull=True).exists()
    out = io.StringIO()
    call_command("memory_embed", stdout=out)  # nothing left: nothing queued
    assert "0 documents queued" in out.getvalue()
    with pytest.raises(CommandError, match="not a campaign id"):
        call_command("memory_embed", "--campaign", "nope")


def test_indexing_text_reads_as_the_gm_expects():
    assert indexing_text(340, 1000) == "indexing 340 of 1,000 passages"
    assert indexing_text(1000, 1000) == "indexed"
    assert indexing_text(None, 1000) == "full text only (embeddings are off)"


def test_the_model_loads_in_the_process_that_needs_it_only(settings):
    """The web process loads the model only when it embeds a query: importing the app
    and serving requests that do not search loads nothing."""
    import subprocess
    import sys

    code = (
        "import django, sys; django.setup();"
        "import memory.api, memory.retrieval, memory.documents, memory.tasks;"
        "sys.exit(1 if {'onnxruntime', 'tokenizers'} & set(sys.modules) else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "rpgai.settings"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_with_embeddings_off_a_search_loads_no_model():
    """MEMORY_EMBEDDINGS=off: a process that searches by meaning's path (the query's
    vector asked for) never imports the model's runtime."""
    import os
    import subprocess
    import sys

    code = (
        "import django, sys, uuid; django.setup();"
        "from memory import embeddings, retrieval;"
        "assert embeddings.embedder() is None;"
        "assert retrieval._vector_ranked(uuid.uuid4(), 'I pay the ferryman', 'the quay', 5,"
        " False) is None;"
        "sys.exit(1 if {'onnxruntime', 'tokenizers'} & set(sys.modules) else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "rpgai.settings", "MEMORY_EMBEDDINGS": "off"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
