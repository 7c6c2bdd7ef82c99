"""Embed the passages that have no vector yet: documents uploaded before embeddings
existed, while MEMORY_EMBEDDINGS was off, or under another model."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from campaigns.management.commands._common import campaign_id_arg
from campaigns.selectors import campaign_get
from memory.embeddings import embedder_model_id
from memory.models import Passage
from memory.tasks import embed_passages
from memory.vectors import passages_embed
from rpgai.tasks import enqueue


class Command(BaseCommand):
    help = (
        "Queue the embedding of every document whose passages lack a vector of the "
        "configured model (the CPU worker does the work); with --now, embed here and wait."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--campaign", metavar="ID", help="Only this campaign (its UUID).")
        parser.add_argument(
            "--now", action="store_true", help="Embed in this process instead of queueing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        model_id = embedder_model_id()
        if model_id is None:
            raise CommandError("MEMORY_EMBEDDINGS is off: there is nothing to embed with")
        missing = Passage.objects.exclude(embedding_model=model_id)  # null ones too
        if options["campaign"]:
            campaign_id = campaign_id_arg(options["campaign"])
            if campaign_get(campaign_id=campaign_id) is None:
                raise CommandError(f"no campaign with id {campaign_id}")
            missing = missing.filter(campaign_id=campaign_id)
        documents = sorted({str(d) for d in missing.values_list("document_id", flat=True)})
        for document_id in documents:
            if options["now"]:
                run = passages_embed(document_id=document_id)
                self.stdout.write(f"document {document_id}: {run.embedded} passages embedded")
            else:
                enqueue(embed_passages, document_id=document_id)
        verb = "embedded" if options["now"] else "queued"
        self.stdout.write(f"{len(documents)} documents {verb}")
