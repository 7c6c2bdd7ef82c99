"""The GMs' Django admin at `/gm/` (CONTRACTS §7 "GM admin").

Any user who is GM of at least one campaign logs in here with their own account (no
staff flag needed) and sees and manages only the campaigns they are GM of. `/admin/`
stays the staff's.

How the scope holds on every URL of this site:

- `GmAdminSite.has_permission`: an active user who is GM of a campaign (via
  `campaigns.selectors`); anyone else is sent to `/gm/login/`, whose form says no to an
  account that is GM of nothing (and shares the site login's rate limits).
- `GmScopedAdmin`, the mixin of every ModelAdmin registered here: the queryset holds only
  the rows of the user's campaigns (`campaign_field` names the campaign on each model),
  the permissions are checked per object, an object outside that scope is a 404 on its
  change, delete and history pages (Django would redirect to the index), and a request
  that names another campaign in its query (`?campaign=<id>`, a filter, an add form's
  initial value or posted choice, an action's selection) is a 404 too.
- Choices: a foreign key to a campaign offers only the user's campaigns; any other
  foreign key offers nothing (no user list, ever). Autocomplete answers only for a field
  a model of this site lists in `autocomplete_fields`, from the scoped queryset. No
  raw-id widgets (their label would be looked up outside the scope).
- Writes go through the apps' services. A service that says no after the form was valid
  (a race, a limit) raises `ServiceRefused` through `service_call`: the admin's
  transaction rolls back (the history entry included) and the page says why.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import router, transaction
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.urls import URLPattern, path, reverse

from campaigns import selectors as campaign_selectors
from rpgai.errors import DomainError
from rpgai.ratelimit import check_rate, client_ip_key, username_key

# The modules that register their ModelAdmins on this site (`gm_site_load`).
GM_ADMIN_MODULES = (
    "campaigns.gm_admin",
    "billing.gm_admin",
    "memory.gm_admin",
    "orchestrator.gm_admin",
)

# The index's order: the table, the DM, its memory, then money.
APP_ORDER = ("campaigns", "orchestrator", "memory", "billing")

CAMPAIGN_MODEL = "campaigns.Campaign"
NOT_FOUND = "Nothing here, or it is not one of your campaigns."


# --- Who is GM of what -------------------------------------------------------------------------


def gm_campaigns(request: HttpRequest) -> dict[str, str]:
    """id -> name of the campaigns the request's user is GM of (archived ones too), read
    once per request."""
    cached: dict[str, str] | None = getattr(request, "_gm_campaigns", None)
    if cached is None:
        user = getattr(request, "user", None)
        cached = {}
        if user is not None and user.is_authenticated and user.is_active:
            for membership in campaign_selectors.campaigns_for_user(user_id=user.id, archived=None):
                if membership.is_gm:
                    cached[str(membership.campaign_id)] = membership.campaign.name
        request._gm_campaigns = cached  # type: ignore[attr-defined]
    return cached


def gm_campaign_ids(request: HttpRequest) -> frozenset[str]:
    return frozenset(gm_campaigns(request))


def is_gm_anywhere(user: Any) -> bool:
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return any(
        m.is_gm for m in campaign_selectors.campaigns_for_user(user_id=user.id, archived=None)
    )


def gm_label_of(model_admin: Any) -> str:
    label = getattr(model_admin, "gm_label", "") or model_admin.opts.verbose_name_plural
    return str(label)[:1].upper() + str(label)[1:]


def request_id_of(request: HttpRequest) -> str:
    return str(getattr(request, "request_id", "") or "")


# --- Service errors as messages ----------------------------------------------------------------


class ServiceRefused(Exception):
    """A service refused a write the form had accepted: said to the GM, never a 500."""


@contextmanager
def service_call(what: str = "Not saved") -> Iterator[None]:
    """Turn a service's DomainError into ServiceRefused with its plain-words detail."""
    try:
        yield
    except DomainError as exc:
        raise ServiceRefused(f"{what}: {exc.detail}") from exc


def domain_detail(exc: DomainError) -> str:
    detail = str(exc.detail)
    return detail[:1].upper() + detail[1:]


# --- The scope of every ModelAdmin of this site ---------------------------------------------


def _campaign_id(value: str) -> str:
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise Http404(NOT_FOUND) from None


class GmCampaignFilter(admin.SimpleListFilter):
    """The user's own campaigns, by name (Django's related-field filter would list every
    campaign on the server)."""

    title = "campaign"
    parameter_name = "campaign"

    def __init__(self, request: HttpRequest, params: Any, model: Any, model_admin: Any) -> None:
        self.campaign_field = getattr(model_admin, "campaign_field", "campaign_id")
        super().__init__(request, params, model, model_admin)

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return sorted(gm_campaigns(request).items(), key=lambda item: item[1].lower())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.campaign_field: value}) if value else queryset


class GmScopedAdmin:
    """Mixin for every ModelAdmin of the GM site (put it first among the bases)."""

    # The campaign's id on the model, as an attribute and as an ORM path: "campaign_id"
    # for a foreign key or a plain UUID column, "pk" for Campaign itself.
    campaign_field = "campaign_id"
    # Query and form parameters that name a campaign: checked against the user's own.
    campaign_params: tuple[str, ...] = ("campaign", "campaign_id")
    gm_can_add = False
    gm_can_change = False
    gm_can_delete = False
    # The name in the index and the sidebar (the model's verbose name if blank).
    gm_label = ""
    view_on_site = False
    raw_id_fields: tuple[str, ...] = ()

    # --- What the user may see --------------------------------------------------------------

    def campaign_id_of(self, obj: Any) -> str:
        return str(getattr(obj, self.campaign_field))

    def owns(self, request: HttpRequest, obj: Any) -> bool:
        return obj is None or self.campaign_id_of(obj) in gm_campaign_ids(request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        return queryset.filter(**{f"{self.campaign_field}__in": sorted(gm_campaign_ids(request))})

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(gm_campaign_ids(request))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(gm_campaign_ids(request)) and self.owns(request, obj)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self.gm_can_add and bool(gm_campaign_ids(request))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.gm_can_change and self.has_view_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.gm_can_delete and self.has_view_permission(request, obj)

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)  # type: ignore[misc]
        if obj is None:
            raise Http404(NOT_FOUND)
        return obj

    def _get_obj_does_not_exist_redirect(self, request: HttpRequest, opts: Any, object_id: Any):  # type: ignore[no-untyped-def]
        raise Http404(NOT_FOUND)

    def check_campaign_params(self, request: HttpRequest, data: QueryDict) -> None:
        """404 when the request names a campaign that is not the user's."""
        mine = gm_campaign_ids(request)
        for key, values in data.lists():
            if key.split("__", 1)[0] not in self.campaign_params:
                continue
            for value in values:
                for part in str(value).split(","):
                    if part.strip() and _campaign_id(part) not in mine:
                        raise Http404(NOT_FOUND)

    # --- Choices: the user's campaigns, nothing else ------------------------------------------

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        related = db_field.related_model
        if related._meta.label == CAMPAIGN_MODEL:
            kwargs["queryset"] = related._default_manager.filter(
                pk__in=sorted(gm_campaign_ids(request))
            )
        else:
            kwargs["queryset"] = related._default_manager.none()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        kwargs["queryset"] = db_field.related_model._default_manager.none()
        return super().formfield_for_manytomany(db_field, request, **kwargs)  # type: ignore[misc]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        queryset = queryset.filter(
            **{f"{self.campaign_field}__in": sorted(gm_campaign_ids(request))}
        )
        return super().get_search_results(request, queryset, search_term)  # type: ignore[misc]

    # --- Views ---------------------------------------------------------------------------------

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        self.check_campaign_params(request, request.GET)
        if request.method == "POST":
            selected = request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME)
            if selected:
                pks = self._selected_pks(selected)
                found = self.get_queryset(request).filter(pk__in=pks).count()
                if found != len(set(pks)):
                    raise Http404(NOT_FOUND)
        return super().changelist_view(request, extra_context)  # type: ignore[misc]

    def _selected_pks(self, selected: list[str]) -> list[Any]:
        field = self.model._meta.pk  # type: ignore[attr-defined]
        try:
            return [field.to_python(value) for value in selected]
        except ValidationError:
            raise Http404(NOT_FOUND) from None

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: Any = None,
    ) -> HttpResponse:
        self.check_campaign_params(request, request.GET)
        if request.method == "POST":
            self.check_campaign_params(request, request.POST)
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]
        except ServiceRefused as exc:
            # The admin's transaction has rolled back (the history entry with it).
            self.message_user(request, str(exc), messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)  # type: ignore[misc]
        except ServiceRefused as exc:
            self.message_user(request, str(exc), messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(request.get_full_path())

    def response_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        # An action runs in one transaction: a refusal (ServiceRefused) undoes it all,
        # the history entries of a bulk delete included, and is said on the list.
        try:
            with transaction.atomic(using=router.db_for_write(self.model)):  # type: ignore[attr-defined]
                return super().response_action(request, queryset)  # type: ignore[misc]
        except ServiceRefused as exc:
            self.message_user(request, str(exc), messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(request.get_full_path())

    # --- Actions: one service call per object, each refusal said ------------------------------

    def each_through_service(
        self,
        request: HttpRequest,
        objects: list[Model],
        call: Any,
        *,
        done: str,
        failed: str,
        label: Any = str,
    ) -> list[Model]:
        """Run `call(obj)` for each object; say which were done and why others were not
        (each object named by `label`)."""
        succeeded: list[Model] = []
        for obj in objects:
            try:
                call(obj)
            except DomainError as exc:
                self.message_user(  # type: ignore[attr-defined]
                    request, f"{failed} {label(obj)}: {domain_detail(exc)}", messages.ERROR
                )
            else:
                succeeded.append(obj)
        if succeeded:
            names = ", ".join(label(obj) for obj in succeeded)
            self.message_user(request, f"{done}: {names}.", messages.SUCCESS)  # type: ignore[attr-defined]
        return succeeded


# --- The site ---------------------------------------------------------------------------------


class GmAuthenticationForm(AuthenticationForm):
    """The user's own account; it must be GM of a campaign (no staff flag needed). Like
    the staff form, it does not say whether the password was right for another account."""

    required_css_class = "required"
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": (
            "Please enter the username and password of an account that is the GM of a "
            "campaign. Both fields may be case-sensitive."
        ),
    }

    def confirm_login_allowed(self, user: Any) -> None:
        super().confirm_login_allowed(user)
        if not is_gm_anywhere(user):
            raise ValidationError(
                self.error_messages["invalid_login"],
                code="invalid_login",
                params={"username": self.username_field.verbose_name},
            )


def _not_here(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    raise Http404(NOT_FOUND)


class GmAdminSite(admin.AdminSite):
    site_header = "rpgai — GM"
    site_title = "rpgai — GM"
    index_title = "Your campaigns"
    site_url = "/"
    login_form = GmAuthenticationForm
    index_template = "gm_admin/index.html"
    enable_nav_sidebar = True

    def has_permission(self, request: HttpRequest) -> bool:
        return bool(getattr(request.user, "is_active", False)) and bool(gm_campaign_ids(request))

    def login(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        # The same counters as the site's login form and POST /api/auth/token: brute
        # force is throttled whichever door it knocks on.
        if request.method == "POST":
            check_rate(request, group="auth.login", key=client_ip_key, rate="login_ip")
            check_rate(
                request, group="auth.login.username", key=username_key, rate="login_username"
            )
        return super().login(request, extra_context)

    def autocomplete_view(self, request: HttpRequest) -> HttpResponse:
        """Only for a field a model of this site offers as autocomplete; the answer then
        comes from that field's scoped admin (Django's view checks the rest)."""
        app_label = request.GET.get("app_label", "")
        model_name = request.GET.get("model_name", "")
        field_name = request.GET.get("field_name", "")
        model_admin = next(
            (
                ma
                for model, ma in self._registry.items()
                if (model._meta.app_label, model._meta.model_name) == (app_label, model_name)
            ),
            None,
        )
        if model_admin is None or field_name not in model_admin.get_autocomplete_fields(request):
            raise PermissionDenied
        return super().autocomplete_view(request)

    def index(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """The index, with the user's recent actions linked into this site."""
        recent: list[tuple[Any, str]] = []
        entries = LogEntry.objects.filter(user_id=request.user.pk).select_related("content_type")
        for entry in entries[:10]:
            model = entry.content_type.model_class() if entry.content_type else None
            address = ""
            if model in self._registry and not entry.is_deletion() and entry.object_id:
                opts = model._meta
                address = reverse(
                    f"{self.name}:{opts.app_label}_{opts.model_name}_change",
                    args=[quote(entry.object_id)],
                )
            recent.append((entry, address))
        return super().index(request, {**(extra_context or {}), "gm_recent": recent})

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[Any]:
        """The campaign's own pages first, each model under its GM label."""
        apps = super().get_app_list(request, app_label)
        for app in apps:
            for entry in app["models"]:
                label = getattr(self._registry.get(entry["model"]), "gm_label", "")
                if label:
                    entry["name"] = label
            # The campaigns themselves first, then the rest by name.
            app["models"].sort(
                key=lambda entry: (
                    getattr(self._registry.get(entry["model"]), "campaign_field", "") != "pk",
                    entry["name"].lower(),
                )
            )
        order = {name: n for n, name in enumerate(APP_ORDER)}
        return sorted(apps, key=lambda app: order.get(app["app_label"], len(order)))

    def get_urls(self) -> list[Any]:
        # No "view on site" shortcut: it would look up any object of any model by id.
        urls: list[Any] = []
        for pattern in super().get_urls():
            if isinstance(pattern, URLPattern) and pattern.name == "view_on_site":
                pattern = path(
                    "r/<path:content_type_id>/<path:object_id>/", _not_here, name="view_on_site"
                )
            urls.append(pattern)
        return urls


gm_site = GmAdminSite(name="gm")


def gm_site_load() -> GmAdminSite:
    """The site with every app's GM ModelAdmins registered (imported once)."""
    for module in GM_ADMIN_MODULES:
        import_module(module)
    return gm_site
