"""Bodies over Django's own limits (DATA_UPLOAD_MAX_MEMORY_SIZE, DATA_UPLOAD_MAX_NUMBER_FIELDS,
DATA_UPLOAD_MAX_NUMBER_FILES) are answered in the contract's shape wherever they arise:
JSON `{"detail", "code"}` (413 `too_large`, 400 `too_many_fields` / `too_many_files`) on
the API and the internal endpoint, a short page of the same status on pages; never an
HTML 400, and never a traceback in the log. The ASGI limit above them (10 MiB) is in
tests/test_rate_limits.py."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from campaigns.models import Campaign
from memory.models import Document
from tests.asgi_http import asgi_request
from tests.auth_tools import access_for, bearer, isolate_limits

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
TWO_MIB_JSON = json.dumps({"name": "Ashes", "pad": "x" * (2 * MIB)})


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    isolate_limits(settings)


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The log of the test; `assert_no_traceback(quiet)` at its end."""
    caplog.set_level(logging.INFO)
    return caplog


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not loud, [(r.name, r.getMessage()) for r in loud]
    assert not any(r.name.startswith("django.security") for r in caplog.records)


def assert_json(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json", response.content[:300]
    body = response.json()
    assert body["code"] == code and body["detail"], body
    assert set(body) == {"detail", "code"}
    return body


def assert_page(response: Any, status: int) -> str:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "<h1>" in html and "Bad Request" not in html
    return html


def api_client(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


# --- The API ------------------------------------------------------------------------------------


def test_a_2_mib_json_body_is_a_json_413(make_user: Any, quiet: Any) -> None:
    response = api_client(make_user("alice")).post(
        "/api/campaigns/", TWO_MIB_JSON, content_type="application/json"
    )
    body = assert_json(response, 413, "too_large")
    assert "1048576 bytes" in body["detail"]
    assert not Campaign.objects.exists()
    # Anonymous too: refused before authentication.
    anonymous = APIClient().post("/api/auth/token", TWO_MIB_JSON, content_type="application/json")
    assert_json(anonymous, 413, "too_large")
    assert_no_traceback(quiet)


def test_a_json_body_within_the_limit_still_goes_through(make_user: Any) -> None:
    payload = json.dumps({"name": "Ashes", "pad": "x" * (MIB - 1000)})
    response = api_client(make_user("alice")).post(
        "/api/campaigns/", payload, content_type="application/json"
    )
    assert response.status_code == 201, response.content[:300]


def test_a_2_mib_form_encoded_body_is_a_json_413_on_the_api(quiet: Any) -> None:
    response = Client().post("/api/auth/token", {"username": "a", "password": "x" * (2 * MIB)})
    assert_json(response, 413, "too_large")
    assert_no_traceback(quiet)


def test_too_many_form_fields_is_a_json_400_on_the_api(quiet: Any, settings: Any) -> None:
    fields = {f"f{n}": "x" for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    response = Client().post("/api/auth/token", {"username": "a", "password": "b", **fields})
    body = assert_json(response, 400, "too_many_fields")
    assert str(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS) in body["detail"]
    assert_no_traceback(quiet)


# --- Documents (multipart: the files do not count, the other fields do) -------------------------


def test_a_document_upload_with_a_2_mib_field_is_a_json_413(campaign: Any, gm: Any, quiet) -> None:
    response = api_client(gm).post(
        f"/api/campaigns/{campaign.id}/documents",
        {
            "file": SimpleUploadedFile("lore.md", b"# Lore\n\nThe crown sank.", "text/markdown"),
            "title": "t" * (2 * MIB),
        },
        format="multipart",
    )
    assert_json(response, 413, "too_large")
    assert not Document.objects.exists()
    assert_no_traceback(quiet)


def test_a_document_upload_with_too_many_files_is_a_json_400(
    campaign: Any, gm: Any, quiet: Any, settings: Any
) -> None:
    files = [
        SimpleUploadedFile(f"part{n}.md", b"# Part\n\nText.", "text/markdown")
        for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1)
    ]
    response = api_client(gm).post(
        f"/api/campaigns/{campaign.id}/documents", {"file": files}, format="multipart"
    )
    assert_json(response, 400, "too_many_files")
    assert not Document.objects.exists()
    assert_no_traceback(quiet)


# --- Pages ---------------------------------------------------------------------------------------


def test_a_2_mib_login_form_is_a_413_page(make_user: Any, quiet: Any) -> None:
    make_user("alice")
    response = Client().post("/login/", {"username": "alice", "password": "x" * (2 * MIB)})
    html = assert_page(response, 413)
    assert "too large" in html.lower()
    assert_no_traceback(quiet)


def test_an_oversized_multipart_login_form_is_a_413_page_with_csrf_enforced(
    make_user: Any, quiet: Any
) -> None:
    """A multipart form has no Content-Length check to stop it: the CSRF check reads it
    first (a browser's real path), where an exception escapes every process_exception."""
    make_user("alice")
    browser = Client(enforce_csrf_checks=True)
    token = browser.get("/login/").cookies["csrftoken"].value
    response = browser.post(
        "/login/",
        {"username": "alice", "password": "x" * (2 * MIB), "csrfmiddlewaretoken": token},
        format="multipart",
    )
    assert_page(response, 413)
    assert_no_traceback(quiet)


def test_a_login_form_with_too_many_fields_is_a_400_page(quiet: Any, settings: Any) -> None:
    fields = {f"f{n}": "x" for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    response = Client().post("/login/", {"username": "a", "password": "b", **fields})
    assert "too many fields" in assert_page(response, 400)
    assert_no_traceback(quiet)


# --- Through the ASGI application (daphne's path), chunked bodies included ----------------------


def _chunks(data: bytes, size: int = 256 * 1024) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.django_db(transaction=True)
async def test_a_2_mib_json_body_is_a_json_413_through_asgi(make_user: Any, quiet: Any) -> None:
    """Under the ASGI limit (10 MiB), over Django's: refused before authentication, with
    the request id. (DRF reads no body without a Content-Length: a chunked one is empty.)"""
    user = await database_sync_to_async(make_user)("alice")
    token = await database_sync_to_async(access_for)(user)
    data = TWO_MIB_JSON.encode()
    status, headers, body = await asgi_request(
        "/api/campaigns/",
        _chunks(data),
        [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            (b"authorization", bearer(token)["HTTP_AUTHORIZATION"].encode()),
        ],
    )
    assert status == 413, body[:300]
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body)["code"] == "too_large"
    assert headers[b"x-request-id"]
    assert_no_traceback(quiet)


@pytest.mark.django_db(transaction=True)
async def test_a_chunked_2_mib_body_to_the_internal_tools_is_a_json_413(settings, quiet) -> None:
    settings.INTERNAL_TOOLS_SECRET = "internal-secret-for-this-test-0123456789"
    status, headers, body = await asgi_request(
        "/internal/tools/execute",
        _chunks(TWO_MIB_JSON.encode()),
        [
            (b"content-type", b"application/json"),
            (b"x-internal-secret", settings.INTERNAL_TOOLS_SECRET.encode()),
        ],
    )
    assert status == 413, body[:300]
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body)["code"] == "too_large"
    assert_no_traceback(quiet)


@pytest.mark.django_db(transaction=True)
async def test_a_chunked_2_mib_login_form_is_a_413_page_through_asgi(quiet: Any) -> None:
    form = b"username=alice&password=" + b"x" * (2 * MIB)
    status, headers, body = await asgi_request(
        "/login/", _chunks(form), [(b"content-type", b"application/x-www-form-urlencoded")]
    )
    assert status == 413, body[:300]
    assert headers[b"content-type"].startswith(b"text/html")
    assert_no_traceback(quiet)
