"""What a member reads through the HTTP API: the seam the visibility tests look through."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient


def api_as(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def events_seen_by(campaign: Any, user: Any) -> list[dict]:
    """GET .../events as `user`: every event of the campaign they may see."""
    response = api_as(user).get(f"/api/campaigns/{campaign.id}/events?limit=1000")
    assert response.status_code == 200, response.content
    return response.json()


def snapshot_seen_by(campaign: Any, user: Any) -> dict:
    """GET .../snapshot as `user`: the snapshot as they may see it."""
    response = api_as(user).get(f"/api/campaigns/{campaign.id}/snapshot")
    assert response.status_code == 200, response.content
    return response.json()
