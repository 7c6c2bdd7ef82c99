"""The server-rendered pages: log in, sign up, my campaigns (create, join) and the room."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

from campaigns.models import Membership
from campaigns.services import campaign_create

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Secret-123"


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def room_config(html: str) -> dict[str, Any]:
    match = re.search(
        r'<script id="room-config" type="application/json">(.*?)</script>', html, re.S
    )
    assert match, "the room page carries its config as a json_script block"
    return json.loads(match.group(1))


# --- Accounts ---------------------------------------------------------------------------------


def test_login_page_renders_a_labelled_form() -> None:
    response = Client().get(reverse("login"))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<label for="id_username"' in html
    assert '<label for="id_password"' in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_login_with_a_wrong_password_shows_an_error(make_user: Any) -> None:
    make_user("alice")
    response = Client().post(reverse("login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert 'class="form-errors"' in response.content.decode()


def test_login_then_lands_on_my_campaigns(make_user: Any) -> None:
    make_user("alice")
    client = Client()
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response.url == reverse("campaign-list")


def test_signup_page_renders() -> None:
    response = Client().get(reverse("signup"))
    assert response.status_code == 200
    html = response.content.decode()
    for field in ("id_username", "id_email", "id_password1", "id_password2"):
        assert f'<label for="{field}"' in html


def test_signup_creates_the_user_and_logs_in(django_user_model: Any) -> None:
    client = Client()
    response = client.post(
        reverse("signup"),
        {
            "username": "newbie",
            "email": "",
            "password1": "a-Long-pass-42",
            "password2": "a-Long-pass-42",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse("campaign-list")
    user = django_user_model.objects.get(username="newbie")
    assert str(client.session["_auth_user_id"]) == str(user.pk)
    assert "newbie" in response.content.decode()


def test_signup_with_mismatched_passwords_shows_field_errors(django_user_model: Any) -> None:
    response = Client().post(
        reverse("signup"),
        {"username": "newbie", "password1": "a-Long-pass-42", "password2": "different-42"},
    )
    assert response.status_code == 200
    assert 'class="field-errors"' in response.content.decode()
    assert not django_user_model.objects.filter(username="newbie").exists()


def test_logout_is_a_post_form_with_csrf(make_user: Any) -> None:
    client = client_for(make_user("alice"))
    html = client.get(reverse("campaign-list")).content.decode()
    form = re.search(
        r'<form class="nav-logout" method="post" action="([^"]+)">(.*?)</form>', html, re.S
    )
    assert form and form.group(1) == reverse("logout")
    assert "csrfmiddlewaretoken" in form.group(2)
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session


# --- My campaigns -----------------------------------------------------------------------------


def test_campaign_list_shows_only_my_campaigns(make_user: Any) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    mine = campaign_create(name="Alice's Keep", creator=alice)
    campaign_create(name="Bob's Secret Vault", creator=bob)
    response = client_for(alice).get(reverse("campaign-list"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Alice&#x27;s Keep" in html
    assert reverse("campaign-room", args=[mine.id]) in html
    assert "Bob" not in html.replace("Bob's", "")  # nothing of Bob's campaign
    assert "Secret Vault" not in html


def test_campaign_list_needs_login() -> None:
    response = Client().get(reverse("campaign-list"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_create_form_makes_me_gm_and_opens_the_room(make_user: Any) -> None:
    alice = make_user("alice")
    client = client_for(alice)
    response = client.post(
        reverse("campaign-create"), {"name": "Ashes", "edition": "5e", "display_name": "Mara"}
    )
    assert response.status_code == 302
    membership = Membership.objects.get(user=alice)
    assert membership.role == "gm" and membership.display_name == "Mara"
    assert response.url == reverse("campaign-room", args=[membership.campaign_id])
    assert "Ashes" in client.get(reverse("campaign-list")).content.decode()


def test_create_form_without_a_name_shows_an_error(make_user: Any) -> None:
    client = client_for(make_user("alice"))
    response = client.post(reverse("campaign-create"), {"name": "", "edition": "5e"}, follow=True)
    assert response.status_code == 200
    assert "message-error" in response.content.decode()
    assert not Membership.objects.exists()


def test_join_form_with_the_invite_code_makes_me_a_player(campaign: Any, make_user: Any) -> None:
    bob = make_user("bob")
    response = client_for(bob).post(
        reverse("campaign-join"),
        {"invite_code": campaign.invite_code.lower(), "display_name": "Thorn"},
    )
    assert response.status_code == 302
    # A new player lands in the character form.
    assert response.url == reverse("campaign-room", args=[campaign.id]) + "#make-character"
    membership = Membership.objects.get(user=bob)
    assert membership.role == "player" and membership.display_name == "Thorn"


def test_join_form_with_a_bad_code_shows_an_error(campaign: Any, make_user: Any) -> None:
    bob = make_user("bob")
    response = client_for(bob).post(
        reverse("campaign-join"), {"invite_code": "NOPE1234", "display_name": ""}, follow=True
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "message-error" in html
    assert "invite code" in html
    assert not Membership.objects.filter(user=bob).exists()


def test_list_page_has_both_forms_with_distinct_field_ids(make_user: Any) -> None:
    html = client_for(make_user("alice")).get(reverse("campaign-list")).content.decode()
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "every id on the page is unique"
    assert f'action="{reverse("campaign-create")}"' in html
    assert f'action="{reverse("campaign-join")}"' in html
    assert 'for="create_display_name"' in html and 'for="join_invite_code"' in html


# --- The room ---------------------------------------------------------------------------------


def test_room_renders_for_a_member_with_its_config(campaign: Any, gm: Any) -> None:
    response = client_for(gm).get(reverse("campaign-room", args=[campaign.id]))
    assert response.status_code == 200
    html = response.content.decode()
    config = room_config(html)
    assert config["campaignId"] == str(campaign.id)
    assert config["wsPath"] == f"/ws/campaigns/{campaign.id}/"
    assert config["userId"] == str(gm.id)
    assert config["role"] == "gm"
    assert 'type="module"' in html and "campaigns/room.js" in html
    assert 'aria-live="polite"' in html
    assert '<label for="action-text"' in html and 'data-max-chars="2000"' in html


def test_room_is_404_for_a_logged_in_outsider(campaign: Any, make_user: Any) -> None:
    response = client_for(make_user("mallory")).get(reverse("campaign-room", args=[campaign.id]))
    assert response.status_code == 404
    assert campaign.name not in response.content.decode()


def test_room_is_404_for_a_campaign_that_does_not_exist(make_user: Any) -> None:
    response = client_for(make_user("mallory")).get(
        "/campaigns/00000000-0000-4000-8000-000000000000/"
    )
    assert response.status_code == 404


def test_room_redirects_an_anonymous_visitor_to_login(campaign: Any) -> None:
    url = reverse("campaign-room", args=[campaign.id])
    response = Client().get(url)
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))
    assert "next=" in response.url


def test_gm_sees_the_invite_code_and_a_player_does_not(
    campaign: Any, gm: Any, join: Any, make_user: Any
) -> None:
    bob = make_user("bob")
    join(bob, "Thorn")
    url = reverse("campaign-room", args=[campaign.id])
    gm_html = client_for(gm).get(url).content.decode()
    assert campaign.invite_code in gm_html
    assert 'id="gm-spend"' in gm_html  # the spend meter is the GM's
    player_html = client_for(bob).get(url).content.decode()
    assert campaign.invite_code not in player_html
    assert 'id="gm-spend"' not in player_html
    assert room_config(player_html)["role"] == "player"


def test_a_script_in_a_campaign_name_is_escaped(make_user: Any) -> None:
    alice = make_user("alice")
    name = "<script>alert('x')</script>"
    campaign = campaign_create(name=name, creator=alice, display_name="<b>bold</b>")
    client = client_for(alice)
    for url in (reverse("campaign-list"), reverse("campaign-room", args=[campaign.id])):
        html = client.get(url).content.decode()
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
        assert "<b>bold</b>" not in html


def test_room_client_assets_are_served_by_staticfiles() -> None:
    for name in ("campaigns/room.js", "campaigns/room.css", "campaigns/site.css"):
        assert finders.find(name), name
    with open(finders.find("campaigns/room.js"), encoding="utf-8") as handle:
        script = handle.read()
    assert "innerHTML" not in script, "player and model text only ever goes in as textContent"
