"""The audio of a narration is served to the members of its campaign only."""

from __future__ import annotations

import io
import uuid
import wave

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from campaigns.events import NewEvent
from campaigns.models import Event
from campaigns.services import campaign_create, events_append

pytest.importorskip("piper")

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def piper_in_tmp_media(settings, tmp_path):
    settings.TTS_PROVIDER = "piper"
    settings.MEDIA_ROOT = str(tmp_path)


def spoken(campaign, text: str, visibility=None) -> list[Event]:
    """Narrate and return the narration's dm_audio_ready events."""
    extra = {"visibility": visibility} if visibility else {}
    [narration] = events_append(
        campaign_id=campaign.id,
        events=[
            NewEvent(
                "dm_narration",
                {"turn_id": str(uuid.uuid4()), "text": text, "options": ["On"]},
                "dm",
                **extra,
            )
        ],
    )
    return list(
        Event.objects.filter(
            campaign=campaign, type="dm_audio_ready", payload__narration_seq=narration.seq
        ).order_by("seq")
    )


def client(user=None, *, bearer: bool = False) -> APIClient:
    api = APIClient()
    if user is not None and bearer:
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    elif user is not None:
        api.force_login(user)  # the browser's session, as the room page has
    return api


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def test_members_fetch_the_wav(campaign, gm, alice):
    [audio] = spoken(campaign, "The torch gutters.")
    url = audio.payload["url"]

    for member in (gm, alice):
        response = client(member).get(url)
        assert response.status_code == 200
        assert response["Content-Type"] == "audio/wav"
        assert "private" in response["Cache-Control"]
        with wave.open(io.BytesIO(response.content)) as wav:
            duration = round(wav.getnframes() * 1000 / wav.getframerate())
        assert duration == audio.payload["duration_ms"]
    assert client(alice, bearer=True).get(url).status_code == 200


def test_an_audio_element_gets_byte_ranges(campaign, alice):
    [audio] = spoken(campaign, "Steps echo.")
    whole = client(alice).get(audio.payload["url"]).content

    part = client(alice).get(audio.payload["url"], HTTP_RANGE="bytes=0-99")
    assert part.status_code == 206
    assert part.content == whole[:100]
    assert part["Content-Range"] == f"bytes 0-99/{len(whole)}"
    tail = client(alice).get(audio.payload["url"], HTTP_RANGE="bytes=-10")
    assert tail.status_code == 206 and tail.content == whole[-10:]
    past = client(alice).get(audio.payload["url"], HTTP_RANGE=f"bytes={len(whole)}-")
    assert past.status_code == 416
    # An audio element may accept only audio: it still gets the file.
    assert client(alice).get(audio.payload["url"], HTTP_ACCEPT="audio/wav").status_code == 200


def test_an_outsider_cannot_fetch_the_audio(campaign, make_user):
    [audio] = spoken(campaign, "A secret is told.")
    url = audio.payload["url"]

    outsider = make_user("mallory")
    for api in (client(outsider), client(outsider, bearer=True)):
        refused = api.get(url)
        assert refused.status_code == 403
        assert refused.json()["code"] == "not_a_member"
        assert refused.content != b"" and b"RIFF" not in refused.content
    # A GM of another campaign naming that one's id with this segment: not found.
    elsewhere = campaign_create(name="Elsewhere", creator=outsider)
    swapped = url.replace(str(campaign.id), str(elsewhere.id))
    assert client(outsider).get(swapped).status_code == 404


def test_anonymous_requests_are_refused(campaign):
    [audio] = spoken(campaign, "Nobody listens.")
    anonymous = client().get(audio.payload["url"])
    assert anonymous.status_code == 401
    assert b"RIFF" not in anonymous.content


def test_unknown_ids_are_not_found(campaign, alice):
    assert (
        client(alice).get(f"/api/campaigns/{campaign.id}/audio/{uuid.uuid4()}").status_code == 404
    )
    assert (
        client(alice).get(f"/api/campaigns/{uuid.uuid4()}/audio/{uuid.uuid4()}").status_code == 404
    )


def test_audio_is_heard_only_by_those_who_may_read_the_narration(campaign, gm, alice):
    [audio] = spoken(campaign, "Only the GM knows.", visibility={"kind": "gm"})

    assert audio.visibility == {"kind": "gm"}
    assert client(gm).get(audio.payload["url"]).status_code == 200
    assert client(alice).get(audio.payload["url"]).status_code == 404


def test_the_endpoint_is_in_the_api_schema(alice):
    schema = client(alice).get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    assert "/api/campaigns/{campaign_id}/audio/{segment_id}" in schema.content.decode()


def test_a_fork_plays_the_audio_it_copied_to_its_own_members_only(campaign, gm, alice, make_user):
    from campaigns.forks import campaign_fork
    from campaigns.models import Membership

    [audio] = spoken(campaign, "The bell tolls once.")
    original_url = audio.payload["url"]
    fork = campaign_fork(campaign_id=campaign.id, at_seq=audio.seq, by_user=gm)

    # Nothing was spoken again: the fork holds the copied dm_audio_ready, no new one.
    copied = Event.objects.filter(campaign=fork, type="dm_audio_ready")
    assert copied.count() == 1
    url = copied.get().payload["url"]
    assert str(fork.id) in url and str(campaign.id) not in url
    # The fork's members hear it through the fork, whatever they are in the original.
    Membership.objects.filter(campaign=campaign, user=alice).delete()
    response = client(alice).get(url)
    assert response.status_code == 200 and response["Content-Type"] == "audio/wav"
    assert client(alice).get(original_url).status_code == 403
    # Someone outside the fork does not, and a segment id made after the fork point
    # is not served through it.
    assert client(make_user("mallory")).get(url).status_code == 403
    [later] = spoken(campaign, "A second bell, after the fork.")
    later_through_fork = later.payload["url"].replace(str(campaign.id), str(fork.id))
    assert client(alice).get(later_through_fork).status_code == 404
