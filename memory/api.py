"""The memory HTTP API (CONTRACTS §4, §7): the GM's documents, the members' rag_search,
what the NPCs remember, and each member's recap and journal."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.api import membership_required
from rpgai.ratelimit import client_ip_key, rate_limit, user_key

from . import documents, selectors
from .conf import setting
from .journal import Journal
from .models import Document, NpcMemory
from .recap import recap_get
from .retrieval import passages_search
from .vectors import indexed_counts, indexing_text

QUERY_MAX_CHARS = 500


class DocumentOutput(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    filename = serializers.CharField()
    content_type = serializers.CharField()
    visibility = serializers.CharField()
    size_bytes = serializers.IntegerField()
    passages = serializers.IntegerField()
    passages_indexed = serializers.IntegerField(
        allow_null=True,
        help_text="passages embedded for search by meaning (indexing runs in the background "
        "after an upload); null: embeddings are off, search is full text only",
    )
    indexing = serializers.CharField(
        help_text='the index in words: "indexing 340 of 1,000 passages", "indexed", or '
        '"full text only (embeddings are off)"'
    )
    created_at = serializers.DateTimeField()


def _document_data(document: Document, passages: int, indexed: int | None) -> dict[str, Any]:
    return {
        "id": str(document.id),
        "title": document.title,
        "filename": document.filename,
        "content_type": document.content_type,
        "visibility": document.visibility,
        "size_bytes": document.size_bytes,
        "passages": passages,
        "passages_indexed": indexed,
        "indexing": indexing_text(indexed, passages),
        "created_at": document.created_at.isoformat().replace("+00:00", "Z"),
    }


def _indexed(document_id: Any) -> int | None:
    counts = indexed_counts(document_ids=[document_id])
    return None if counts is None else counts.get(document_id, 0)


class DocumentListCreateApi(APIView):
    """`POST`: the GM uploads lore or rules (a `file`, plain text or Markdown, with an
    optional `title`; or JSON `title` + `text`). `GET`: the campaign's documents (GMs
    see those kept from players too)."""

    parser_classes = (JSONParser, MultiPartParser)

    class UploadInput(serializers.Serializer):
        file = serializers.FileField(help_text="a .txt or .md file, UTF-8")
        title = serializers.CharField(max_length=200, required=False, allow_blank=True)
        visibility = serializers.ChoiceField(
            choices=Document.Visibility.values, default=Document.Visibility.ALL
        )

    class TextInput(serializers.Serializer):
        title = serializers.CharField(max_length=200)
        text = serializers.CharField(trim_whitespace=False)
        content_type = serializers.ChoiceField(
            choices=[documents.MARKDOWN, documents.PLAIN], default=documents.MARKDOWN
        )
        visibility = serializers.ChoiceField(
            choices=Document.Visibility.values, default=Document.Visibility.ALL
        )

    @extend_schema(
        operation_id="campaign_documents_list", responses={200: DocumentOutput(many=True)}
    )
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id)
        found = selectors.documents_list(campaign_id=campaign_id, include_gm_only=membership.is_gm)
        ids = [d.id for d in found]
        counts = selectors.passage_counts(document_ids=ids)
        indexed = indexed_counts(document_ids=ids)
        return Response(
            [
                _document_data(
                    d, counts.get(d.id, 0), None if indexed is None else indexed.get(d.id, 0)
                )
                for d in found
            ]
        )

    @extend_schema(
        operation_id="campaign_documents_create",
        request={"multipart/form-data": UploadInput, "application/json": TextInput},
        responses={
            201: DocumentOutput,
            200: OpenApiResponse(DocumentOutput, description="the same text was already there"),
            400: OpenApiResponse(
                description=(
                    "not text or Markdown, not UTF-8, empty, or over "
                    "MEMORY_DOCUMENT_MAX_PASSAGES passages"
                )
            ),
            413: OpenApiResponse(description="over MEMORY_DOCUMENT_MAX_BYTES"),
        },
    )
    @rate_limit("documents.upload", key=user_key, rate="upload_user")
    @rate_limit("documents.upload.ip", key=client_ip_key, rate="upload_ip")
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership_required(request, campaign_id, gm=True)
        if request.content_type.startswith("multipart/form-data"):
            data = _valid(self.UploadInput, request.data)
            upload: UploadedFile = data["file"]
            documents.size_check(upload.size or 0)
            filename = upload.name or ""
            kind = documents.document_kind(
                filename=filename, content_type=upload.content_type or ""
            )
            text = documents.document_text_decode(_read(upload))
        else:
            data = _valid(self.TextInput, request.data)
            text, filename, kind = data["text"], "", data["content_type"]
        result = documents.document_create(
            campaign_id=campaign_id,
            text=text,
            title=data.get("title") or "",
            filename=filename,
            content_type=kind,
            visibility=data["visibility"],
            uploaded_by=request.user,
        )
        return Response(
            _document_data(result.document, result.passages, _indexed(result.document.id)),
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


def _read(upload: UploadedFile) -> bytes:
    # The declared size may lie: stop reading one chunk past the limit.
    limit = setting("MEMORY_DOCUMENT_MAX_BYTES")
    chunks: list[bytes] = []
    size = 0
    for chunk in upload.chunks():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    documents.size_check(size)
    return b"".join(chunks)


def _valid(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    if not hasattr(data, "get"):
        raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class PassageOutput(serializers.Serializer):
    passage_id = serializers.IntegerField()
    document_id = serializers.UUIDField()
    document_title = serializers.CharField()
    heading = serializers.CharField()
    source = serializers.CharField(help_text='"Title / Section": where the passage comes from')
    text = serializers.CharField()
    score = serializers.FloatField(
        help_text="0..1, higher is better: full text and meaning fused (1: first by both)"
    )
    fulltext_score = serializers.FloatField(
        allow_null=True, help_text="0..1 by full text; null: full text did not find it"
    )
    vector_score = serializers.FloatField(
        allow_null=True,
        help_text="cosine similarity of meaning (-1..1); null: not found by meaning "
        "(embeddings off, not indexed yet, or too far)",
    )


class RagSearchOutput(serializers.Serializer):
    query = serializers.CharField()
    results = PassageOutput(many=True)


class RagSearchApi(APIView):
    """`GET ?q=...&limit=N`: the campaign's passages that best match, by full text and by
    meaning fused, with each method's score and the sources. Players search the documents
    everyone may read; GMs all of them."""

    class QueryInput(serializers.Serializer):
        q = serializers.CharField(max_length=QUERY_MAX_CHARS)
        limit = serializers.IntegerField(min_value=1, max_value=20, default=5)

    @extend_schema(
        operation_id="campaign_rag_search",
        parameters=[
            OpenApiParameter("q", OpenApiTypes.STR, required=True, description="what to find"),
            OpenApiParameter("limit", OpenApiTypes.INT, description="1 to 20 (default 5)"),
        ],
        responses={200: RagSearchOutput},
    )
    @rate_limit("rag_search", key=user_key, rate="rag_search_user", methods=("GET",))
    @rate_limit("rag_search.ip", key=client_ip_key, rate="rag_search_ip", methods=("GET",))
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id)
        data = _valid(self.QueryInput, request.query_params)
        hits = passages_search(
            campaign_id=campaign_id,
            query=data["q"],
            limit=data["limit"],
            include_gm_only=membership.is_gm,
        )
        return Response(
            {
                "query": data["q"],
                "results": [
                    {
                        "passage_id": hit.passage_id,
                        "document_id": str(hit.document_id),
                        "document_title": hit.document_title,
                        "heading": hit.heading,
                        "source": hit.source,
                        "text": hit.text,
                        "score": hit.score,
                        "fulltext_score": hit.fulltext_score,
                        "vector_score": hit.vector_score,
                    }
                    for hit in hits
                ],
            }
        )


class NpcMemoryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    npc_id = serializers.CharField()
    npc_name = serializers.CharField()
    relation = serializers.CharField(help_text="met, told, saw, at or noticed")
    target_kind = serializers.CharField()
    target_id = serializers.CharField()
    target_name = serializers.CharField()
    detail = serializers.CharField()
    sentiment = serializers.IntegerField(help_text="-2 (hostile) .. +2 (warm)")
    source_seq = serializers.IntegerField()
    secret = serializers.BooleanField(help_text="known to some players only")
    known_by = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="GMs only: the user ids who know a secret edge (empty: everyone)",
    )


def _npc_memory_data(edge: NpcMemory, *, gm: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": edge.id,
        "npc_id": edge.npc_id,
        "npc_name": edge.npc_name,
        "relation": edge.relation,
        "target_kind": edge.target_kind,
        "target_id": edge.target_id,
        "target_name": edge.target_name,
        "detail": edge.detail,
        "sentiment": edge.sentiment,
        "source_seq": edge.source_seq,
        "secret": bool(edge.known_by),
    }
    if gm:
        data["known_by"] = list(edge.known_by or [])
    return data


class NpcMemoryListApi(APIView):
    """`GET ?npc_id=...&after_seq=N&limit=N`: the NPC memory edges, oldest first. A player
    sees those everyone knows and the secrets they were told; GMs see all, with who
    knows each secret (`known_by`)."""

    class QueryInput(serializers.Serializer):
        npc_id = serializers.CharField(max_length=64, required=False)
        after_seq = serializers.IntegerField(min_value=0, default=0)
        limit = serializers.IntegerField(min_value=1, max_value=500, default=200)

    @extend_schema(
        operation_id="campaign_npc_memories",
        parameters=[
            OpenApiParameter("npc_id", OpenApiTypes.STR, description="one NPC's entity id"),
            OpenApiParameter("after_seq", OpenApiTypes.INT, description="edges after this seq"),
            OpenApiParameter("limit", OpenApiTypes.INT, description="1 to 500 (default 200)"),
        ],
        responses={200: NpcMemoryOutput(many=True)},
    )
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id)
        data = _valid(self.QueryInput, request.query_params)
        edges = selectors.npc_memories_of(
            campaign_id=campaign_id,
            npc_id=data.get("npc_id"),
            reader_user_id=None if membership.is_gm else membership.user_id,
        )
        edges = edges.filter(source_seq__gt=data["after_seq"]).order_by("source_seq", "id")
        return Response([_npc_memory_data(e, gm=membership.is_gm) for e in edges[: data["limit"]]])


# --- Recap and journal (CONTRACTS §7) ------------------------------------------------------------


class RecapOutput(serializers.Serializer):
    text = serializers.CharField(
        help_text='"Previously on…": a few short paragraphs; "" when nothing the member may '
        "see happened since"
    )
    since_seq = serializers.IntegerField(help_text="the recap tells what came after this seq")
    from_seq = serializers.IntegerField(help_text="since_seq + 1")
    to_seq = serializers.IntegerField(help_text="the campaign's latest seq as the recap was read")
    events = serializers.IntegerField(
        help_text="story events the member may see in from_seq..to_seq (actions, narrations, "
        "rolls, whispers, ...)"
    )
    summaries = serializers.IntegerField(help_text="stored summaries the text draws on")
    last_seen_at = serializers.DateTimeField(
        allow_null=True, help_text="when the member's last socket to the room closed; null: never"
    )
    away_seconds = serializers.IntegerField(
        allow_null=True, help_text="seconds since last_seen_at; null: never"
    )
    card = serializers.BooleanField(
        help_text="the server's advice: show the card (away RECAP_CARD_AWAY_SECONDS or more, "
        "default an hour, and there is something to tell)"
    )


class RecapApi(APIView):
    """`GET ?since_seq=N` (member): "Previously on…" for the caller, from the stored
    summaries and the events after them, only what they may see; without `since_seq`,
    since their last socket to the room closed (from the start if it never did)."""

    class QueryInput(serializers.Serializer):
        since_seq = serializers.IntegerField(min_value=0, required=False)

    @extend_schema(
        operation_id="campaign_recap",
        parameters=[
            OpenApiParameter(
                "since_seq",
                OpenApiTypes.INT,
                description="tell what came after this seq (default: where the member left)",
            )
        ],
        responses={200: RecapOutput},
    )
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id)
        data = _valid(self.QueryInput, request.query_params)
        recap = recap_get(membership=membership, since_seq=data.get("since_seq"))
        return Response(
            {
                "text": recap.text,
                "since_seq": recap.since_seq,
                "from_seq": recap.from_seq,
                "to_seq": recap.to_seq,
                "events": recap.events,
                "summaries": recap.summaries,
                "last_seen_at": (
                    recap.last_seen_at.isoformat().replace("+00:00", "Z")
                    if recap.last_seen_at
                    else None
                ),
                "away_seconds": recap.away_seconds,
                "card": recap.card,
            }
        )


class _JsonErrors(BaseContentNegotiation):
    """Whatever the client accepts, an error is JSON (the journal itself is a stream)."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: list[Any], format_suffix=None):
        renderer = JSONRenderer()
        return renderer, renderer.media_type


class JournalApi(APIView):
    """`GET` (member): the story so far as the caller may read it, as a Markdown file
    (`text/markdown`, a download named after the campaign), streamed a page of events at
    a time."""

    content_negotiation_class = _JsonErrors
    renderer_classes = (JSONRenderer,)  # errors only

    @extend_schema(
        operation_id="campaign_journal",
        responses={
            (200, "text/markdown"): OpenApiResponse(
                OpenApiTypes.STR, description="the journal, as an attachment"
            )
        },
    )
    @rate_limit("journal", key=user_key, rate="30/m", methods=("GET",))
    def get(self, request: Request, campaign_id: uuid.UUID) -> StreamingHttpResponse:
        membership = membership_required(request, campaign_id)
        journal = Journal(membership=membership)
        # Under ASGI an async stream is sent page by page (a sync one Django would
        # first read whole); under WSGI (and Django's test client) a sync one is.
        asgi = isinstance(request._request, ASGIRequest)
        response = StreamingHttpResponse(
            journal.achunks() if asgi else journal.chunks(),
            content_type="text/markdown; charset=utf-8",
        )
        response["Content-Disposition"] = content_disposition_header(
            as_attachment=True, filename=journal.filename
        )
        response["Cache-Control"] = "private, no-store"
        response["X-Content-Type-Options"] = "nosniff"
        return response
