"""The GM admin (`/gm/`, rpgai/gm_site.py) for a campaign's memory: lore documents
(upload through `documents.document_create`; title, visibility and removal through
`curation`) and what each NPC remembers (corrected or forgotten through `curation`).
Only the user's own campaigns (`GmScopedAdmin`)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.files.uploadedfile import UploadedFile
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse

from campaigns import selectors as campaign_selectors
from rpgai.errors import DomainError
from rpgai.gm_site import GmCampaignFilter, GmScopedAdmin, domain_detail, gm_site, service_call
from rpgai.ratelimit import check_rate, client_ip_key, user_key

from . import curation, documents
from .admin import DocumentAdmin, NpcMemoryAdmin
from .conf import setting
from .embeddings import embedder_model_id
from .models import Document, NpcMemory
from .vectors import indexed_counts, indexing_text

# --- Documents ---------------------------------------------------------------------------------


class DocumentUploadForm(forms.ModelForm):
    """A Markdown or plain-text file, or the text pasted; the same checks as the API's
    upload, as form errors."""

    file = forms.FileField(
        required=False, help_text="A .md or .txt file (UTF-8). Or paste the text below."
    )
    title = forms.CharField(
        required=False,
        max_length=curation.TITLE_MAX_CHARS,
        help_text="Blank: the file's name, or the pasted text's first heading.",
    )
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 10}))
    markdown = forms.BooleanField(required=False, initial=True, label="The pasted text is Markdown")

    class Meta:
        model = Document
        fields = ("campaign", "title", "visibility")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload: UploadedFile | None = data.get("file")
        pasted = data.get("text") or ""
        if bool(upload) == bool(pasted.strip()):
            raise forms.ValidationError("Upload a file or paste the text (one of the two).")
        try:
            if upload:
                documents.size_check(upload.size or 0)
                filename = upload.name or ""
                kind = documents.document_kind(
                    filename=filename, content_type=upload.content_type or ""
                )
                raw = upload.read(setting("MEMORY_DOCUMENT_MAX_BYTES") + 1)
                documents.size_check(len(raw))
                text = documents.document_text_decode(raw)
            else:
                filename = ""
                kind = "text/markdown" if data.get("markdown") else "text/plain"
                text = pasted
                documents.size_check(len(text.encode("utf-8", "surrogatepass")))
        except DomainError as exc:
            raise forms.ValidationError(domain_detail(exc), code=exc.code) from None
        data["document"] = {"text": text, "filename": filename, "content_type": kind}
        return data


class GmDocumentAdmin(GmScopedAdmin, DocumentAdmin):
    gm_can_add = True
    gm_can_change = True
    gm_can_delete = True
    autocomplete_fields = ("campaign",)
    list_display = (
        "title",
        "campaign",
        "visibility",
        "content_type",
        "size_bytes",
        "index_status",
        "created_at",
    )
    list_filter = (GmCampaignFilter, "visibility", "content_type")
    search_fields = ("title", "filename")
    fields = (
        "campaign",
        "title",
        "visibility",
        "filename",
        "content_type",
        "size_bytes",
        "index_status",
        "created_at",
        "text",
    )
    readonly_fields = (
        "campaign",
        "filename",
        "content_type",
        "size_bytes",
        "index_status",
        "created_at",
        "text",
    )

    def get_queryset(self, request: HttpRequest) -> Any:
        # The passages and those embedded, counted in the list's one query.
        model_id = embedder_model_id()
        return (
            super()
            .get_queryset(request)
            .annotate(
                passages_total=Count("passages", distinct=True),
                passages_indexed=Count(
                    "passages",
                    filter=Q(passages__embedding_model=model_id),
                    distinct=True,
                ),
            )
        )

    @admin.display(description="search index")
    def index_status(self, obj: Document) -> str:
        # "indexing 340 of 1,000 passages" while the background task embeds them.
        total = getattr(obj, "passages_total", None)
        indexed = getattr(obj, "passages_indexed", None)
        if total is None:  # a document not read through get_queryset
            total = obj.passages.count()
            counts = indexed_counts(document_ids=[obj.pk])
            indexed = None if counts is None else counts.get(obj.pk, 0)
        if embedder_model_id() is None:
            indexed = None
        return indexing_text(indexed, total)

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = DocumentUploadForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ("campaign", "title", "visibility", "file", "text", "markdown")
        return self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else self.readonly_fields

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        if request.method == "POST":
            # The API's upload limits, counted for the admin's uploads too.
            check_rate(request, group="documents.upload", key=user_key, rate="upload_user")
            check_rate(request, group="documents.upload.ip", key=client_ip_key, rate="upload_ip")
        return super().add_view(request, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: Document, form: Any, change: bool) -> None:
        if change:
            with service_call():
                curation.document_update(
                    campaign_id=obj.campaign_id,
                    document_id=obj.pk,
                    title=form.cleaned_data["title"],
                    visibility=form.cleaned_data["visibility"],
                )
            return
        with service_call("Not uploaded"):
            result = documents.document_create(
                campaign_id=obj.campaign_id,
                title=form.cleaned_data.get("title") or "",
                visibility=form.cleaned_data["visibility"],
                uploaded_by=request.user,
                **form.cleaned_data["document"],
            )
        # What the admin logs and links to after the save: the stored document.
        obj.pk = result.document.pk
        obj.title = result.document.title
        if not result.created:
            self.message_user(
                request,
                f"The same text was already uploaded to this campaign as “{result.document}”.",
                "warning",
            )

    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        with service_call("Not removed"):
            curation.document_delete(campaign_id=obj.campaign_id, document_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for document in queryset:
            self.delete_model(request, document)


# --- NPC memories ------------------------------------------------------------------------------


class NpcMemoryForm(forms.ModelForm):
    sentiment = forms.IntegerField(
        min_value=curation.SENTIMENT_MIN,
        max_value=curation.SENTIMENT_MAX,
        help_text="How the NPC took it: -2 hostile, 0 neutral, +2 warm.",
    )

    class Meta:
        model = NpcMemory
        fields = ("detail", "sentiment")
        widgets = {"detail": forms.Textarea(attrs={"rows": 3})}


def _member_names(campaign_id: Any) -> dict[str, str]:
    return {
        str(m.user_id): m.display_name
        for m in campaign_selectors.members_of(campaign_id=campaign_id)
    }


class GmNpcMemoryAdmin(GmScopedAdmin, NpcMemoryAdmin):
    """What each NPC remembers, as the DM is told it; the GM corrects or removes a memory."""

    gm_label = "NPC memories"
    gm_can_change = True
    gm_can_delete = True
    form = NpcMemoryForm
    list_filter = (GmCampaignFilter, "relation", "target_kind")
    search_fields = ("npc_name", "target_name", "detail")
    fields = (
        "campaign",
        "npc_name",
        "relation",
        "target_name",
        "target_kind",
        "detail",
        "sentiment",
        "known_by_text",
        "source_seq",
        "created_at",
    )
    readonly_fields = (
        "campaign",
        "npc_name",
        "relation",
        "target_name",
        "target_kind",
        "known_by_text",
        "source_seq",
        "created_at",
    )

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context and "cl" in context:
            names: dict[str, dict[str, str]] = {}
            for memory in context["cl"].result_list:
                key = str(memory.campaign_id)
                if memory.known_by and key not in names:
                    names[key] = _member_names(memory.campaign_id)
                memory._names = names.get(key, {})
        return response

    @admin.display(description="known by")
    def known_by_text(self, obj: NpcMemory) -> str:
        # Who at the table was told (a private event): their names; empty means everyone.
        if not obj.known_by:
            return "everyone"
        names = getattr(obj, "_names", None) or _member_names(obj.campaign_id)
        return ", ".join(names.get(str(u), "a former member") for u in obj.known_by)

    def save_model(self, request: HttpRequest, obj: NpcMemory, form: Any, change: bool) -> None:
        with service_call():
            curation.npc_memory_update(
                campaign_id=obj.campaign_id,
                memory_id=obj.pk,
                detail=form.cleaned_data["detail"],
                sentiment=form.cleaned_data["sentiment"],
            )

    def delete_model(self, request: HttpRequest, obj: NpcMemory) -> None:
        with service_call("Not removed"):
            curation.npc_memory_delete(campaign_id=obj.campaign_id, memory_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for memory in queryset:
            self.delete_model(request, memory)


gm_site.register(Document, GmDocumentAdmin)
gm_site.register(NpcMemory, GmNpcMemoryAdmin)
