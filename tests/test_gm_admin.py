"""The GMs' Django admin at /gm/ (CONTRACTS §7 "GM admin"): a GM who is not staff logs in
with their own account and sees and manages only their own campaigns; every admin URL of
another campaign's object answers 403 or 404 (the list is made from the site's registry,
so a model registered later is covered or the test fails); players and anonymous users
do not get in; writes go through the services and append their events; /admin/ stays the
staff's."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.admin.utils import quote
from django.contrib.contenttypes.models import ContentType
from django.core.files.uploadedfile import SimpleUploadedFile
from django.forms.models import model_to_dict
from django.test import Client
from django.urls import reverse

from billing.models import CampaignBudget, ModelUsage
from billing.selectors import budget_status
from billing.services import budget_set
from campaigns import selectors, services
from campaigns.models import Campaign, CampaignBan, Event, Membership
from memory.documents import document_create
from memory.models import Document, NpcMemory, Passage
from orchestrator.models import DMSettings
from orchestrator.services import dm_settings_set
from rpgai.errors import PermissionDenied
from rpgai.gm_site import GmScopedAdmin, gm_site_load
from tests.auth_tools import isolate_limits

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Secret-123"  # conftest's make_user


@pytest.fixture(autouse=True)
def _isolated(settings: Any) -> None:
    isolate_limits(settings)


@pytest.fixture
def site() -> Any:
    return gm_site_load()


def stock(campaign: Campaign, gm: Any, player: Any, kicked: Any) -> dict[type, Any]:
    """One object of every kind the GM admin shows, in `campaign`."""
    membership = services.campaign_join(
        invite_code=campaign.invite_code, user=player, display_name=player.username.title()
    )
    services.campaign_join(invite_code=campaign.invite_code, user=kicked, display_name="Kicked")
    ban = services.member_kick(campaign_id=campaign.id, user_id=kicked.id, by_user=gm)
    budget = budget_set(campaign_id=campaign.id, daily_cap_usd="2.00", hard_stop=True)
    usage = ModelUsage.objects.create(
        campaign_id=campaign.id,
        provider="fake",
        model="fake-dm",
        purpose="dm_turn",
        input_tokens=1200,
        output_tokens=300,
        cost_usd=Decimal("0.125"),
    )
    document = document_create(
        campaign_id=campaign.id,
        text=f"# {campaign.name} lore\n\nThe well of {campaign.name} is deep.",
        content_type="text/markdown",
        uploaded_by=gm,
    ).document
    memory = NpcMemory.objects.create(
        campaign=campaign,
        npc_id="npc-1",
        npc_name=f"Wenna of {campaign.name}",
        relation="told",
        target_kind="character",
        target_name=player.username.title(),
        detail=f"heard the secret of {campaign.name}",
        source_seq=3,
        key="told-1",
        known_by=[str(player.id)],
    )
    dm = dm_settings_set(campaign_id=campaign.id, provider="", model="")
    event = Event.objects.filter(campaign=campaign).order_by("seq").first()
    return {
        Campaign: campaign,
        Membership: membership,
        CampaignBan: ban,
        Event: event,
        CampaignBudget: budget,
        ModelUsage: usage,
        Document: document,
        NpcMemory: memory,
        DMSettings: dm,
    }


@pytest.fixture
def ours(campaign: Campaign, gm: Any, make_user: Any) -> dict[type, Any]:
    """The GM's campaign (conftest's `campaign`) with a player, Alice, and everything else."""
    return stock(campaign, gm, make_user("alice"), make_user("mallory"))


@pytest.fixture
def rival(make_user: Any) -> Any:
    return make_user("rival")


@pytest.fixture
def theirs(rival: Any, make_user: Any) -> dict[type, Any]:
    """Another GM's campaign, as well stocked."""
    other = services.campaign_create(
        name="Ashen Road", creator=rival, premise="The rival table's secret premise"
    )
    return stock(other, rival, make_user("zed"), make_user("yorick"))


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def url(site: Any, model: type, view: str, *args: Any) -> str:
    return reverse(
        f"{site.name}:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args
    )


def secrets_of(stocked: dict[type, Any]) -> list[str]:
    """Text that must never appear on another GM's pages."""
    campaign = stocked[Campaign]
    return [
        campaign.name,
        str(campaign.id),
        campaign.invite_code,
        stocked[NpcMemory].detail,
        stocked[Document].title,
    ]


# --- Logging in and seeing one's own -------------------------------------------------------


def test_a_gm_who_is_not_staff_logs_in_and_sees_only_their_campaigns(gm, ours, theirs, site):
    assert not gm.is_staff and not gm.is_superuser
    client = Client()
    response = client.post(
        reverse("gm:login"), {"username": "gm", "password": PASSWORD, "next": "/gm/"}
    )
    assert response.status_code == 302 and response["Location"] == "/gm/"

    index = client.get("/gm/")
    assert index.status_code == 200
    html = index.content.decode()
    assert "rpgai — GM" in html
    for secret in secrets_of(theirs):
        assert secret not in html
    # No staff-only model: users and groups are not here, nor is the staff's admin.
    assert client.get("/gm/auth/user/").status_code == 404
    assert client.get("/gm/accounts/user/").status_code == 404
    assert client.get("/admin/").status_code == 302

    for model, model_admin in site._registry.items():
        response = client.get(url(site, model, "changelist"))
        assert response.status_code == 200, model
        listed = {obj.pk for obj in response.context["cl"].result_list}
        assert ours[model].pk in listed, model
        assert theirs[model].pk not in listed, model
        page = response.content.decode()
        for secret in secrets_of(theirs):
            assert secret not in page, (model, secret)
        # Their own object's page, and its add page if there is one.
        change = client.get(url(site, model, "change", quote(ours[model].pk)))
        assert change.status_code == 200, model
        pages = [change.content.decode()]
        if model_admin.has_add_permission(change.wsgi_request):
            add = client.get(url(site, model, "add"))
            assert add.status_code == 200, model
            pages.append(add.content.decode())
        for page in pages:
            for secret in secrets_of(theirs):
                assert secret not in page, (model, secret)


def test_the_campaign_page_links_everything_of_the_campaign(gm, ours, site):
    client = logged_in(gm)
    campaign = ours[Campaign]
    html = client.get(url(site, Campaign, "change", campaign.pk)).content.decode()
    for model in (Membership, CampaignBan, Event, CampaignBudget, ModelUsage, Document, NpcMemory):
        assert f"{url(site, model, 'changelist')}?campaign={campaign.pk}" in html, model
    # Setup fields come from the log's setup, with the members by name.
    assert "gm (Game master), Alice (Player)" in html


# --- Another campaign's objects: 403 or 404 on every URL ---------------------------------


def outsider_requests(
    site: Any, model: type, model_admin: Any, obj: Any, campaign_id: Any
) -> list[tuple[str, str, dict[str, Any]]]:
    """Every admin URL of the site for `obj` (another GM's), with the query or form that
    names its campaign; made from the registry, so a new model is not forgotten."""
    pk = quote(obj.pk)
    pk_name = model._meta.pk.attname
    changelist = url(site, model, "changelist")
    change = url(site, model, "change", pk)
    delete = url(site, model, "delete", pk)
    add = url(site, model, "add")
    lookup = "id__exact" if model_admin.campaign_field == "pk" else "campaign_id__exact"
    requests = [
        ("get", f"{changelist}?campaign={campaign_id}", {}),
        ("get", f"{changelist}?{lookup}={campaign_id}", {}),
        ("get", f"{changelist}?_popup=1&_to_field={pk_name}&campaign={campaign_id}", {}),
        ("get", change, {}),
        ("get", f"{change}?_popup=1&_to_field={pk_name}", {}),
        ("post", change, {"_save": "Save"}),
        ("get", delete, {}),
        ("get", f"{delete}?_popup=1", {}),
        ("post", delete, {"post": "yes"}),
        ("get", url(site, model, "history", pk), {}),
        ("get", f"{add}?campaign={campaign_id}", {}),
        ("get", f"{add}?_popup=1&_to_field={pk_name}&campaign={campaign_id}", {}),
        ("post", add, {"campaign": str(campaign_id), "_save": "Save"}),
    ]
    for name in model_admin.actions or ():
        action = name if isinstance(name, str) else name.__name__
        requests.append(
            ("post", changelist, {"action": action, "_selected_action": str(obj.pk), "index": "0"})
        )
    requests.append(
        (
            "post",
            changelist,
            {"action": "delete_selected", "_selected_action": str(obj.pk), "post": "yes"},
        )
    )
    return requests


def frozen(obj: Any) -> dict[str, Any] | None:
    fresh = type(obj)._default_manager.filter(pk=obj.pk).first()
    return None if fresh is None else model_to_dict(fresh)


def test_another_campaigns_objects_answer_404_or_403_on_every_admin_url(gm, ours, theirs, site):
    client = logged_in(gm)
    campaign_id = theirs[Campaign].id
    registered = set(site._registry)
    missing = registered - set(theirs)
    assert not missing, f"stock() makes no object of {missing}: add one so it is checked"
    before_events = Event.objects.filter(campaign_id=campaign_id).count()
    logs_before = LogEntry.objects.count()
    for model, model_admin in site._registry.items():
        assert isinstance(model_admin, GmScopedAdmin), model
        obj = theirs[model]
        state = frozen(obj)
        for method, address, data in outsider_requests(site, model, model_admin, obj, campaign_id):
            response = getattr(client, method)(address, data)
            assert response.status_code in (403, 404), (method, address, response.status_code)
            body = response.content.decode()
            for secret in secrets_of(theirs):
                assert secret not in body, (address, secret)
        assert frozen(obj) == state, model
    assert Event.objects.filter(campaign_id=campaign_id).count() == before_events
    assert LogEntry.objects.count() == logs_before
    # The "view on site" shortcut is not there to look anything up by id.
    content_type = ContentType.objects.get_for_model(Campaign)
    assert client.get(f"/gm/r/{content_type.id}/{campaign_id}/").status_code == 404


def autocomplete_fields(site: Any) -> list[tuple[type, str]]:
    request = type("R", (), {})()
    return [
        (model, field)
        for model, model_admin in site._registry.items()
        for field in model_admin.get_autocomplete_fields(request)
    ]


def test_autocomplete_offers_only_the_gms_own_campaigns(gm, ours, theirs, site):
    client = logged_in(gm)
    fields = autocomplete_fields(site)
    assert fields, "the add forms pick their campaign by autocomplete"
    for model, field in fields:
        query = {
            "app_label": model._meta.app_label,
            "model_name": model._meta.model_name,
            "field_name": field,
        }
        everything = client.get(reverse("gm:autocomplete"), {**query, "term": ""})
        assert everything.status_code == 200, (model, field)
        ids = {row["id"] for row in everything.json()["results"]}
        assert str(ours[Campaign].id) in ids
        assert str(theirs[Campaign].id) not in ids
        for term in (theirs[Campaign].name, theirs[Campaign].invite_code, str(theirs[Campaign].id)):
            found = client.get(reverse("gm:autocomplete"), {**query, "term": term})
            assert found.status_code == 200
            assert found.json()["results"] == [], (model, field, term)
    # A field no form of this site offers, or a model that is not here: refused.
    for query in (
        {"app_label": "campaigns", "model_name": "membership", "field_name": "campaign"},
        {"app_label": "campaigns", "model_name": "membership", "field_name": "user"},
        {"app_label": "billing", "model_name": "userbudget", "field_name": "user"},
        {"app_label": "memory", "model_name": "passage", "field_name": "campaign"},
        {"app_label": "nothing", "model_name": "here", "field_name": "campaign"},
    ):
        response = client.get(reverse("gm:autocomplete"), {**query, "term": ""})
        assert response.status_code == 403, query


def test_players_anonymous_users_and_staff_who_are_gm_of_nothing_do_not_get_in(
    client, gm, ours, theirs, site, admin_user
):
    alice = ours[Membership].user
    own = [
        reverse("gm:index"),
        "/gm/campaigns/",
        reverse("gm:autocomplete") + "?term=",
        reverse("gm:password_change"),
    ]
    for model in site._registry:
        own += [url(site, model, "changelist"), url(site, model, "change", quote(ours[model].pk))]
    # Writes too: every URL of the GM's own objects, with their campaign named.
    writes = [
        (address, data)
        for model, model_admin in site._registry.items()
        for method, address, data in outsider_requests(
            site, model, model_admin, ours[model], ours[Campaign].id
        )
        if method == "post"
    ]
    states = {model: frozen(obj) for model, obj in ours.items()}
    for address in own:  # anonymous
        response = client.get(address)
        assert response.status_code == 302, address
        assert response["Location"].startswith(reverse("gm:login")), address
    for address, data in writes:
        response = client.post(address, data)
        assert response.status_code == 302, address
        assert response["Location"].startswith(reverse("gm:login")), address

    # A player's own password does not open /gm/, and says so without saying why.
    refused = client.post(reverse("gm:login"), {"username": "alice", "password": PASSWORD})
    assert refused.status_code == 200
    assert "account that is the GM of a campaign" in refused.content.decode()
    assert "_auth_user_id" not in client.session

    for user in (alice, admin_user):  # a player; staff who are GM of nothing
        visitor = logged_in(user)
        for address in own:
            response = visitor.get(address)
            assert response.status_code == 302, (user, address)
            assert response["Location"].startswith(reverse("gm:login")), (user, address)
        for address, data in writes:
            response = visitor.post(address, data)
            assert response.status_code == 302, (user, address)
            assert response["Location"].startswith(reverse("gm:login")), (user, address)
    assert {model: frozen(obj) for model, obj in ours.items()} == states


def test_gm_login_shares_the_sites_login_limits(client, gm, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_username": "3/m"}
    statuses = [
        client.post(reverse("gm:login"), {"username": "gm", "password": "wrong"}).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


def test_staff_keep_admin(admin_client, ours, theirs, site):
    response = admin_client.get(reverse("admin:campaigns_campaign_changelist"))
    assert response.status_code == 200
    listed = {c.pk for c in response.context["cl"].result_list}
    assert {ours[Campaign].pk, theirs[Campaign].pk} <= listed
    assert admin_client.get("/admin/").status_code == 200
    for model in site._registry:
        staff_admin = admin.site._registry.get(model)
        assert staff_admin is None or not isinstance(staff_admin, GmScopedAdmin), model


# --- Writes: through the services, with their events --------------------------------------


def form_data(response: Any) -> dict[str, Any]:
    """What the change page's form would post as it is."""
    form = response.context["adminform"].form
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = value
            if field.show_hidden_initial:
                data[f"initial-{name}"] = value
    return data


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_setup_edits_and_turns_go_through_the_services_with_campaign_updated(gm, ours, site):
    client = logged_in(gm)
    campaign = ours[Campaign]
    change = url(site, Campaign, "change", campaign.pk)
    data = form_data(client.get(change))
    data.update(
        premise="A drowned crown under the lake.",
        lines="No harm to children",
        veils="Torture\r\nSpiders",
        turn_mode="rounds",
        round_seconds="90",
        _save="Save",
    )
    response = client.post(change, data)
    assert response.status_code == 302, response.context and response.context["errors"]
    updates = [
        e.payload["changes"]
        for e in Event.objects.filter(campaign=campaign, type="campaign_updated")
    ]
    assert {
        "premise": "A drowned crown under the lake.",
        "lines": ["No harm to children"],
        "veils": ["Torture", "Spiders"],
    } in updates
    assert {"turn_mode": "rounds"} in updates
    setup = selectors.campaign_setup(selectors.snapshot_get(campaign_id=campaign.id).state)
    assert setup["premise"] == "A drowned crown under the lake." and setup["turn_mode"] == "rounds"
    campaign.refresh_from_db()
    assert campaign.round_seconds == 90
    entry = LogEntry.objects.get(object_id=str(campaign.pk))
    assert entry.user_id == gm.id
    # The index's recent actions link back into /gm/, not to the staff's /admin/.
    index = client.get("/gm/").content.decode()
    assert f'href="{change}"' in index and 'href="/admin/' not in index

    # A co-GM's change made while this page was open stays: only what was edited here
    # is sent (the tone, below), not the premise this page showed.
    page = client.get(change)
    services.campaign_update(
        campaign_id=campaign.id, by_user=gm, changes={"premise": "Changed in the room."}
    )
    client.post(change, {**form_data(page), "tone": "Grim", "_save": "Save"})
    setup = selectors.campaign_setup(selectors.snapshot_get(campaign_id=campaign.id).state)
    assert (setup["premise"], setup["tone"]) == ("Changed in the room.", "Grim")
    data = form_data(client.get(change))

    # The service's rules as form errors: what was typed stays on the page.
    data["veils"] = "\n".join(f"veil {n}" for n in range(25))
    refused = client.post(change, {**data, "_save": "Save"})
    assert refused.status_code == 200
    assert "Veils holds at most 20 items" in refused.content.decode()


def test_archive_new_invite_code_and_fork_are_actions(gm, ours, site):
    client = logged_in(gm)
    campaign = ours[Campaign]
    changelist = url(site, Campaign, "changelist")
    old_code = campaign.invite_code

    def act(action: str) -> Any:
        return client.post(
            changelist, {"action": action, "_selected_action": str(campaign.pk)}, follow=True
        )

    assert "Archived: The Sunken Crown." in messages_of(act("archive"))
    campaign.refresh_from_db()
    assert campaign.archived
    last = Event.objects.filter(campaign=campaign).order_by("-seq").first()
    assert last.type == "campaign_updated" and last.payload["changes"] == {"archived": True}
    act("unarchive")
    campaign.refresh_from_db()
    assert not campaign.archived

    said = messages_of(act("invite_code_new"))
    campaign.refresh_from_db()
    assert campaign.invite_code != old_code and f": {campaign.invite_code}" in said[0]

    act("fork_at_latest")
    fork = Campaign.objects.get(forked_from=campaign)
    forks = client.get(changelist, {"forked_from": str(campaign.pk)})
    assert [c.pk for c in forks.context["cl"].result_list] == [fork.pk]

    # At an event of the log, too.
    event = Event.objects.filter(campaign=campaign, type="player_joined").order_by("seq").last()
    client.post(
        url(site, Event, "changelist"),
        {"action": "fork_at_event", "_selected_action": str(event.pk)},
    )
    assert Campaign.objects.filter(forked_from=campaign, forked_at_seq=event.seq).exists()


def test_kick_bans_until_the_ban_is_lifted(gm, ours, site):
    client = logged_in(gm)
    campaign = ours[Campaign]
    alice = ours[Membership]
    response = client.post(
        url(site, Membership, "changelist"),
        {"action": "kick_and_ban", "_selected_action": str(alice.pk)},
        follow=True,
    )
    assert messages_of(response) == ["Removed and banned: Alice (The Sunken Crown)."]
    left = Event.objects.filter(campaign=campaign, type="player_left").order_by("-seq").first()
    assert left.payload["user_id"] == str(alice.user_id)
    ban = CampaignBan.objects.get(campaign=campaign, user_id=alice.user_id)
    with pytest.raises(PermissionDenied):
        services.campaign_join(invite_code=campaign.invite_code, user=alice.user)

    # The GM cannot remove themselves here (the room's leave and hand-over are for that).
    own = Membership.objects.get(campaign=campaign, user=gm)
    refused = client.post(
        url(site, Membership, "changelist"),
        {"action": "kick_and_ban", "_selected_action": str(own.pk)},
        follow=True,
    )
    assert "You cannot remove yourself" in messages_of(refused)[0]
    assert Membership.objects.filter(pk=own.pk).exists()

    # Deleting the ban lifts it; so does the action (for the other ban of the stock).
    lifted = client.post(url(site, CampaignBan, "delete", ban.pk), {"post": "yes"}, follow=True)
    assert messages_of(lifted) == [
        "Ban lifted: Alice (The Sunken Crown). They may join again with the invite code."
    ]
    assert not CampaignBan.objects.filter(pk=ban.pk).exists()
    services.campaign_join(invite_code=campaign.invite_code, user=alice.user)
    other = CampaignBan.objects.get(campaign=campaign)
    response = client.post(
        url(site, CampaignBan, "changelist"),
        {"action": "lift", "_selected_action": str(other.pk)},
        follow=True,
    )
    assert messages_of(response) == ["Ban lifted: Kicked (The Sunken Crown)."]
    assert not CampaignBan.objects.filter(campaign=campaign).exists()


def test_budget_cap_within_the_servers_ceiling_even_for_a_staff_gm(gm, ours, site, settings):
    settings.BILLING_MAX_DAILY_CAP_USD = "10.00"
    campaign = ours[Campaign]
    gm.is_staff = True  # staff is the operator in /admin/, never in /gm/
    gm.save(update_fields=["is_staff"])
    client = logged_in(gm)
    change = url(site, CampaignBudget, "change", campaign.pk)
    data = {**form_data(client.get(change)), "daily_cap_usd": "50", "_save": "Save"}
    refused = client.post(change, data)
    assert refused.status_code == 200
    assert "The most a campaign may spend a day on this server is $10.00." in (
        refused.content.decode()
    )
    assert budget_status(campaign_id=campaign.id).daily_cap_usd == Decimal("2.00")
    data.update(daily_cap_usd="3.5", hard_stop="")
    del data["hard_stop"]
    assert client.post(change, data).status_code == 302
    status = budget_status(campaign_id=campaign.id)
    assert status.daily_cap_usd == Decimal("3.5") and not status.hard_stop


def test_usage_shows_the_budget_and_a_chart_of_spend_by_day_with_exact_figures(
    gm, ours, theirs, site
):
    campaign = ours[Campaign]
    ModelUsage.objects.create(
        campaign_id=campaign.id,
        provider="fake",
        model="fake-dm",
        purpose="summary",
        cost_usd=Decimal("0.0000123"),
    )
    client = logged_in(gm)
    page = client.get(url(site, ModelUsage, "changelist"), {"campaign": str(campaign.pk)})
    assert page.status_code == 200
    html = page.content.decode()
    assert "Budget of The Sunken Crown" in html and "$2.00" in html
    bars = re.findall(r'<rect [^>]*data-cost="([0-9.]+)"', html)
    assert len(bars) == 30 and bars[-1] == "0.1250123"
    assert "<td>0.1250123</td>" in html  # the day's exact figure
    assert "0.125" not in "".join(bars[:-1])
    for secret in secrets_of(theirs):
        assert secret not in html


def test_npc_memories_are_corrected_and_forgotten_through_the_service(gm, ours, site):
    client = logged_in(gm)
    memory = ours[NpcMemory]
    change = url(site, NpcMemory, "change", memory.pk)
    page = client.get(change)
    assert "Alice" in page.content.decode()  # who knows it, by name
    data = {"detail": "heard that the mayor lies", "sentiment": "-1", "_save": "Save"}
    assert client.post(change, data).status_code == 302
    memory.refresh_from_db()
    assert (memory.detail, memory.sentiment) == ("heard that the mayor lies", -1)
    refused = client.post(change, {**data, "sentiment": "7"})
    assert refused.status_code == 200 and "less than or equal to 2" in refused.content.decode()
    assert (
        client.post(url(site, NpcMemory, "delete", memory.pk), {"post": "yes"}).status_code == 302
    )
    assert not NpcMemory.objects.filter(pk=memory.pk).exists()


def test_documents_are_uploaded_and_removed_through_the_services(gm, ours, site, settings):
    client = logged_in(gm)
    campaign = ours[Campaign]
    add = url(site, Document, "add")
    upload = SimpleUploadedFile(
        "harbour.md", b"# The Harbour\n\nThe boats leave at dawn.", content_type="text/markdown"
    )
    response = client.post(
        add, {"campaign": str(campaign.pk), "title": "", "visibility": "gm", "file": upload}
    )
    assert response.status_code == 302, response.context and response.context["errors"]
    document = Document.objects.get(campaign=campaign, filename="harbour.md")
    assert document.title == "harbour"  # a blank title is the file's name
    assert document.visibility == "gm" and document.uploaded_by_id == gm.id
    assert Passage.objects.filter(document=document).exists()

    change = url(site, Document, "change", document.pk)
    assert client.post(change, {"title": "Harbour", "visibility": "all"}).status_code == 302
    document.refresh_from_db()
    assert (document.title, document.visibility) == ("Harbour", "all")

    bad = SimpleUploadedFile("x.md", b"\xff\xfe\x00bad", content_type="text/markdown")
    refused = client.post(add, {"campaign": str(campaign.pk), "visibility": "all", "file": bad})
    assert refused.status_code == 200 and refused.context["errors"]

    # A refusal after the form was valid is said, not a 500, and nothing is logged.
    settings.MEMORY_DOCUMENTS_MAX_PER_CAMPAIGN = 2
    logs = LogEntry.objects.count()
    response = client.post(
        add,
        {"campaign": str(campaign.pk), "visibility": "all", "text": "# More\n\nAnother page."},
        follow=True,
    )
    assert response.status_code == 200
    assert "Not uploaded: a campaign holds at most 2 documents" in messages_of(response)
    assert LogEntry.objects.count() == logs

    delete = url(site, Document, "delete", document.pk)
    assert client.post(delete, {"post": "yes"}).status_code == 302
    assert not Document.objects.filter(pk=document.pk).exists()
    assert not Passage.objects.filter(document_id=document.pk).exists()


def test_dm_model_outside_the_allow_list_is_refused_in_plain_words(gm, ours, site, settings):
    settings.DM_MODEL = "gpt-4o-mini"
    settings.DM_MODELS_ALLOWED = ["gpt-4.1"]
    client = logged_in(gm)
    campaign = ours[Campaign]
    change = url(site, DMSettings, "change", campaign.pk)
    refused = client.post(change, {"provider": "openai", "model": "gpt-5-pro"})
    assert refused.status_code == 200
    assert (
        "That model is not offered on this server. Choose one of: gpt-4o-mini, gpt-4.1."
        in refused.content.decode()
    )
    assert DMSettings.objects.get(campaign=campaign).model == ""
    assert client.post(change, {"provider": "openai", "model": "gpt-4.1"}).status_code == 302
    assert DMSettings.objects.get(campaign=campaign).model == "gpt-4.1"


def test_events_are_read_only_and_filtered_by_campaign_and_type(gm, ours, theirs, site):
    campaign = ours[Campaign]
    services.gm_direction_give(
        membership=Membership.objects.get(campaign=campaign, user=gm),
        text="The storm is a sending of the witch.",
        secret=True,
        now=False,
    )
    client = logged_in(gm)
    changelist = url(site, Event, "changelist")
    page = client.get(changelist, {"campaign": str(campaign.pk), "type": "player_joined"})
    events = page.context["cl"].result_list
    assert events and {(e.campaign_id, e.type) for e in events} == {(campaign.id, "player_joined")}
    assert "Alice (player)" in page.content.decode()
    secret = Event.objects.get(campaign=campaign, type="gm_direction")
    shown = client.get(url(site, Event, "change", secret.pk)).content.decode()
    assert "The storm is a sending of the witch." in shown and "GMs only" in shown
    assert client.post(url(site, Event, "change", secret.pk), {}).status_code == 403
    assert client.get(url(site, Event, "add")).status_code == 403
    assert client.post(url(site, Event, "delete", secret.pk), {"post": "yes"}).status_code == 403


def test_playing_in_another_campaign_gives_no_gm_rights_there(gm, ours, theirs, site):
    """The scope is the campaigns the user is GM of, read per request, not those they are in."""
    rival_campaign = theirs[Campaign]
    services.campaign_join(invite_code=rival_campaign.invite_code, user=gm, display_name="Guest")
    client = logged_in(gm)
    assert client.get(url(site, Campaign, "change", rival_campaign.pk)).status_code == 404
    listed = client.get(url(site, Membership, "changelist")).context["cl"].result_list
    assert {m.campaign_id for m in listed} == {ours[Campaign].id}


PRICES = """
[models."fake-dm"]
input = "20.00"
output = "80.00"
"""


@pytest.mark.django_db(transaction=True)
def test_a_cap_raised_here_resumes_a_dm_stopped_by_the_cap_once(
    gm, make_user, site, settings, tmp_path
):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    settings.PRICES_FILE = str(prices)
    settings.BILLING_USER_DAILY_CAP_USD = ""
    settings.BILLING_MAX_DAILY_CAP_USD = "10.00"
    campaign = services.campaign_create(name="The Vault", creator=gm)
    alice = services.campaign_join(
        invite_code=campaign.invite_code, user=make_user("alice"), display_name="Alice"
    )
    budget_set(campaign_id=campaign.id, daily_cap_usd="0.05", hard_stop=True)
    ModelUsage.objects.create(
        campaign_id=campaign.id,
        provider="fake",
        model="fake-dm",
        purpose="dm_turn",
        cost_usd=Decimal("0.0499"),
    )
    action = services.player_action_submit(
        membership=alice, action_id=uuid.uuid4(), text="I open the vault door"
    )  # the commit runs the DM's turn, which the cap stops
    failed = Event.objects.get(campaign=campaign, type="turn_failed")
    assert failed.payload["code"] == "budget_exceeded"

    client = logged_in(gm)
    change = url(site, CampaignBudget, "change", campaign.pk)
    data = {"daily_cap_usd": "5.00", "hard_stop": "on", "_save": "Save"}
    assert client.post(change, data).status_code == 302
    reopened = Event.objects.filter(campaign=campaign, type="turn_reopened")
    assert reopened.count() == 1 and reopened[0].payload["from_seq"] <= action.seq
    narrations = Event.objects.filter(campaign=campaign, type="dm_narration", seq__gt=failed.seq)
    assert narrations.count() == 1
    # The same save again resumes nothing more.
    assert client.post(change, data).status_code == 302
    assert Event.objects.filter(campaign=campaign, type="turn_reopened").count() == 1
    assert Event.objects.filter(campaign=campaign, type="dm_narration").count() == 1
