"""The admin shows a campaign's memory read-only: lore documents and what each NPC knows,
with who at the table was told (`known_by`)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from memory.models import Document, NpcMemory

pytestmark = pytest.mark.django_db


@pytest.fixture
def remembered(campaign, join, make_user):
    alice = join(make_user("alice"), "Alice")
    public = NpcMemory.objects.create(
        campaign=campaign,
        npc_id="npc-1",
        npc_name="Wenna",
        relation="told",
        target_kind="character",
        target_name="Alice",
        detail="I thank Wenna for the stew",
        source_seq=3,
        key="public",
    )
    secret = NpcMemory.objects.create(
        campaign=campaign,
        npc_id="npc-1",
        npc_name="Wenna",
        relation="told",
        target_kind="character",
        target_name="Alice",
        detail="I tell Wenna the mayor is a traitor",
        source_seq=5,
        key="secret",
        known_by=[str(alice.user_id)],
    )
    document = Document.objects.create(
        campaign=campaign,
        title="The Drowned Lantern",
        content_type="text/markdown",
        text="# The inn\nWenna keeps it.",
        size_bytes=24,
        sha256="0" * 64,
    )
    return public, secret, document, alice


def test_npc_memories_show_who_knows_them(admin_client, remembered):
    _, secret, _, alice = remembered
    page = admin_client.get(reverse("admin:memory_npcmemory_changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "everyone" in html  # the public edge
    assert str(alice.user_id) in html  # the secret one names who was told
    change = admin_client.get(reverse("admin:memory_npcmemory_change", args=[secret.pk]))
    assert change.status_code == 200 and "the mayor is a traitor" in change.content.decode()


def test_memory_is_read_only_in_the_admin(admin_client, remembered):
    public, _, document, _ = remembered
    assert admin_client.get(reverse("admin:memory_npcmemory_add")).status_code == 403
    assert admin_client.get(reverse("admin:memory_document_add")).status_code == 403
    delete = reverse("admin:memory_npcmemory_delete", args=[public.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert NpcMemory.objects.filter(pk=public.pk).exists()
    page = admin_client.get(reverse("admin:memory_document_change", args=[document.pk]))
    assert page.status_code == 200 and "Wenna keeps it." in page.content.decode()
