"""schemathesis against /api/schema/: generated requests, valid and invalid, for every
operation of the API, signed in as a campaign's GM and half of the time aimed at that
real campaign; none may get a 5xx. Run in-process through Django's WSGI handler with a
bounded, derandomized number of examples (SCHEMATHESIS_EXAMPLES, default 12 per
operation and mode)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from tests.auth_tools import access_for, isolate_limits

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "12"))


@pytest.fixture(autouse=True)
def _quiet(settings):
    isolate_limits(settings)
    settings.TTS_PROVIDER = "none"  # narrations need no voice here


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def test_generated_requests_never_get_a_5xx(campaign, gm, alice):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    headers = {"Authorization": f"Bearer {access_for(gm)}"}
    real = {"campaign_id": str(campaign.id), "user_id": str(alice.id)}
    errors: list[str] = []
    statuses: list[int] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _explore(operation, mode, headers, real, errors, statuses)
    assert not errors, "\n".join(errors[:20])
    # It did explore: many requests, some of them accepted.
    assert len(statuses) >= len(operations) * 2
    assert any(200 <= status < 300 for status in statuses)


def _explore(
    operation: Any,
    mode: GenerationMode,
    headers: dict,
    real: dict,
    errors: list[str],
    statuses: list[int],
) -> None:
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), aim=st.booleans())
    def run(case: Any, aim: bool) -> None:
        if aim and case.path_parameters:
            for name in case.path_parameters:
                if name in real:
                    case.path_parameters[name] = real[name]
        response = case.call(headers=headers)
        statuses.append(response.status_code)
        if response.status_code >= 500:
            errors.append(
                f"{response.status_code} {operation.label} ({mode.value}): "
                f"{case.as_curl_command()}\n{response.text[:500]}"
            )

    run()
