"""Tracing (rpgai/tracing.py): a player's socket message, the turn it causes, the turn's
tools and the speech after it are one trace, in process and across Celery; with no OTLP
endpoint nothing of the SDK is installed and a span costs next to nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from celery import shared_task
from django.test import Client
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from campaigns.models import Event
from campaigns.tools import turn_commit
from rpgai import tracing
from rpgai.celery import app as celery_app
from rpgai.request_id import request_id_bound
from rpgai.tasks import enqueue, enqueue_later, wait_idle
from tests import processes
from tests.ws import Room, events_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this process ends, kept in memory (tracing off again afterwards)."""
    exporter = InMemorySpanExporter()
    tracing.use_exporter(exporter)
    try:
        yield exporter
    finally:
        tracing.use_exporter(None)


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def ancestors(span: ReadableSpan, every: tuple[ReadableSpan, ...]) -> list[str]:
    """The names of `span`'s parents, nearest first."""
    by_id = {s.context.span_id: s for s in every}
    names = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


def tree(every: tuple[ReadableSpan, ...], trace_id: int) -> str:
    """One trace as indented text (docs/operations.md shows one)."""
    mine = sorted((s for s in every if s.context.trace_id == trace_id), key=lambda s: s.start_time)
    ids = {s.context.span_id for s in mine}
    children: dict[int | None, list[ReadableSpan]] = {}
    for s in mine:
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        children.setdefault(parent, []).append(s)
    lines = [f"trace {trace_id:032x}  (start after the action, duration)"]
    began = mine[0].start_time if mine else 0

    def walk(parent: int | None, depth: int) -> None:
        for s in children.get(parent, []):
            at, ms = (s.start_time - began) / 1e6, (s.end_time - s.start_time) / 1e6
            attrs = " ".join(f"{k.removeprefix('rpgai.')}={v}" for k, v in s.attributes.items())
            lines.append(f"{'  ' * depth}{s.name}  +{at:.0f} ms {ms:.1f} ms  {attrs}")
            for e in s.events:
                extra = " ".join(f"{k.removeprefix('rpgai.')}={v}" for k, v in e.attributes.items())
                lines.append(f"{'  ' * (depth + 1)}! {e.name} {extra}")
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


# --- In process: socket action -> task -> turn -> tools -> speech ------------------------------


async def test_a_socket_action_and_the_turn_it_causes_are_one_trace(campaign, alice, spans):
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)
    await room.send(
        {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "I knock"}
    )
    messages = await room.recv_until(
        lambda m: m["type"] == "event" and m["event"]["type"] == "dm_narration"
    )
    await wait_idle()
    await room.close()
    [action] = [e for e in events_of(messages) if e["type"] == "player_action"]
    request_id = action["request_id"]

    [ws_action] = named(spans, "ws.action")  # hello is not traced
    assert ws_action.attributes["rpgai.message_type"] == "client.player_action"
    assert ws_action.attributes["rpgai.campaign_id"] == str(campaign.id)
    assert ws_action.attributes["rpgai.request_id"] == request_id
    assert ws_action.parent is None

    # The turn ran as an in-process task on another thread: same trace, below the action.
    [commit] = named(spans, "turn.commit")
    assert commit.context.trace_id == ws_action.context.trace_id
    assert commit.attributes["rpgai.request_id"] == request_id
    assert commit.attributes["rpgai.campaign_id"] == str(campaign.id)
    narration = events_of(messages)[-1]
    assert commit.attributes["rpgai.turn_id"] == narration["payload"]["turn_id"]
    assert commit.attributes["rpgai.tool_calls"] >= 0
    assert commit.attributes["rpgai.events"] >= 1
    every = spans.get_finished_spans()
    assert ancestors(commit, every)[-1] == "ws.action"


async def test_whispers_and_rolls_are_traced_hello_and_ping_are_not(campaign, alice, spans):
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)
    await room.send({"type": "client.ping"})
    await room.recv_until(lambda m: m["type"] == "server.pong")
    await room.send({"type": "client.roll", "formula": "1d20", "reason": "luck"})
    await room.recv_until(lambda m: m["type"] == "event" and m["event"]["type"] == "roll_result")
    await room.send({"type": "client.whisper", "to": "gm", "text": "psst"})
    await room.recv_until(lambda m: m["type"] == "server.ack")
    await wait_idle()
    await room.close()
    types = [s.attributes["rpgai.message_type"] for s in named(spans, "ws.action")]
    assert types == ["client.roll", "client.whisper"]
    request_ids = {s.attributes["rpgai.request_id"] for s in named(spans, "ws.action")}
    assert len(request_ids) == 2


def test_refused_tool_calls_are_events_on_the_commit_span(campaign, spans):
    turn_id = str(uuid.uuid4())
    with request_id_bound("commit-rid"):
        result = turn_commit(
            campaign_id=campaign.id,
            turn_id=turn_id,
            narration="The door holds.",
            options=["Wait"],
            tool_calls=[
                {"name": "roll", "args": {"formula": "1d20", "reason": "Athletics"}},
                {"name": "summon_dragon", "args": {}},
                {"name": "roll", "args": {"formula": "not dice", "reason": "?"}},
            ],
            through_seq=0,
        )
    assert len(result.rejections) == 2
    [commit] = named(spans, "turn.commit")
    assert commit.attributes["rpgai.tool_calls"] == 3
    assert commit.attributes["rpgai.tool_calls_rejected"] == 2
    assert commit.attributes["rpgai.turn_id"] == turn_id
    assert commit.attributes["rpgai.request_id"] == "commit-rid"
    refused = [e for e in commit.events if e.name == "tool.rejected"]
    assert [
        (e.attributes["rpgai.tool_index"], e.attributes["rpgai.tool_name"]) for e in refused
    ] == [(r.index, r.name) for r in result.rejections]
    assert all(e.attributes["rpgai.reason"] for e in refused)


async def test_the_speech_of_a_narration_is_in_the_actions_trace(
    campaign, alice, spans, settings, tmp_path
):
    pytest.importorskip("piper")
    settings.TTS_PROVIDER = "piper"
    settings.MEDIA_ROOT = str(tmp_path)
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)
    await room.send(
        {
            "type": "client.player_action",
            "action_id": str(uuid.uuid4()),
            "text": "I attack the goblin with my axe",
        }
    )
    await room.recv_until(
        lambda m: m["type"] == "event" and m["event"]["type"] == "dm_audio_ready", timeout=60
    )
    await wait_idle(timeout=60)
    await room.close()
    [ws_action] = named(spans, "ws.action")
    [speak] = named(spans, "voice.speak")
    assert speak.context.trace_id == ws_action.context.trace_id
    assert speak.attributes["rpgai.request_id"] == ws_action.attributes["rpgai.request_id"]
    assert speak.attributes["rpgai.segments"] >= 1
    [narration] = await _narrations(campaign.id)
    assert speak.attributes["rpgai.narration_seq"] == narration.seq
    every = spans.get_finished_spans()
    assert "task voice.tasks.synthesize_narration" in ancestors(speak, every)
    assert ancestors(speak, every)[-1] == "ws.action"
    # The trace in docs/operations.md: `pytest tests/test_tracing.py -k speech -s`.
    print("\n" + tree(every, ws_action.context.trace_id))


async def _narrations(campaign_id: Any) -> list[Event]:
    from channels.db import database_sync_to_async

    return await database_sync_to_async(
        lambda: list(Event.objects.filter(campaign_id=campaign_id, type="dm_narration"))
    )()


# --- Celery: the message carries the trace, the worker side continues it ---------------------

probe_runs: list[dict[str, Any]] = []


@shared_task(bind=True, name="tests.test_tracing.probe")
def probe(self: Any, tag: str) -> None:
    """Records what the task saw: its message headers and the span it runs in."""
    from opentelemetry import trace

    current = trace.get_current_span()
    probe_runs.append(
        {
            "tag": tag,
            "headers": dict(getattr(self.request, "headers", None) or {}),
            "span": current,
            "trace_id": current.get_span_context().trace_id,
        }
    )


def test_a_task_message_carries_the_trace_and_the_worker_side_continues_it(
    spans, settings, monkeypatch
):
    """`enqueue` puts `traceparent` in the message headers; Celery runs the task (eagerly,
    through its own request and signals) and the prerun handler makes the task's span a
    child of the enqueuer's, taken from those headers."""
    settings.CELERY_TASK_ALWAYS_EAGER = False  # rpgai.tasks hands the message to Celery
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)  # which runs it here
    probe_runs.clear()
    with request_id_bound("celery-rid"), tracing.span("enqueuer") as enqueuer:
        enqueue(probe, tag="now")
    [run] = probe_runs
    trace_id = enqueuer.get_span_context().trace_id
    traceparent = run["headers"]["traceparent"]
    assert traceparent.split("-")[1] == f"{trace_id:032x}"
    assert run["headers"]["request_id"] == "celery-rid"
    assert run["trace_id"] == trace_id
    [task_span] = named(spans, "task tests.test_tracing.probe")
    assert task_span.parent.span_id == enqueuer.get_span_context().span_id
    assert task_span.attributes["rpgai.request_id"] == "celery-rid"
    assert task_span.attributes["rpgai.task_state"] == "SUCCESS"
    assert run["span"].get_span_context().span_id == task_span.context.span_id


def test_the_prerun_handler_takes_the_parent_from_the_headers_alone(spans):
    """A worker process has no context of the enqueuer's: the headers are all it gets."""
    headers = {}
    with tracing.span("web") as web:
        tracing.inject_headers(headers)
    assert set(headers) >= {"traceparent"}

    task = probe
    ran = threading.Event()
    seen: dict[str, Any] = {}

    def worker() -> None:  # a thread starts with an empty context, like a worker process
        from opentelemetry import trace

        task.push_request(retries=0, **headers)  # message protocol 2: headers are attributes
        try:
            tracing.celery_task_prerun(task_id="t-1", task=task, kwargs={"campaign_id": "c-1"})
            seen["inside"] = trace.get_current_span().get_span_context()
            tracing.celery_task_postrun(task_id="t-1", task=task, state="FAILURE")
            seen["after"] = trace.get_current_span().get_span_context()
        finally:
            task.pop_request()
            ran.set()

    threading.Thread(target=worker).start()
    assert ran.wait(5)
    [task_span] = named(spans, "task tests.test_tracing.probe")
    assert task_span.context.trace_id == web.get_span_context().trace_id
    assert task_span.parent.span_id == web.get_span_context().span_id
    assert task_span.attributes["rpgai.campaign_id"] == "c-1"
    assert not task_span.status.is_ok
    assert seen["inside"].span_id == task_span.context.span_id
    assert not seen["after"].is_valid  # detached: the thread's context is empty again


def test_a_delayed_task_on_a_timer_thread_stays_in_the_trace(spans):
    """Embedded, outside an event loop, `enqueue_later` runs the task on a timer thread,
    which starts with an empty context: the trace is handed over."""
    probe_runs.clear()
    with tracing.span("enqueuer") as enqueuer:
        enqueue_later(probe, 0.01, tag="later")
    deadline = time.monotonic() + 5
    while not probe_runs and time.monotonic() < deadline:
        time.sleep(0.01)
    [run] = probe_runs
    assert run["trace_id"] == enqueuer.get_span_context().trace_id
    [task_span] = named(spans, "task tests.test_tracing.probe")
    assert task_span.parent.span_id == enqueuer.get_span_context().span_id


# --- Set-up: nothing without an endpoint; OTLP/HTTP with one ---------------------------------


class OtlpReceiver:
    """A stand-in OpenTelemetry Collector: takes OTLP/HTTP protobuf on /v1/traces."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.take(self.path, self.headers.get("Content-Type", ""), request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, path: str, content_type: str, request: Any) -> None:
        self.paths.append(f"{path} {content_type}")
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    attributes = {}
                    for a in s.attributes:
                        value = a.value
                        attributes[a.key] = getattr(value, value.WhichOneof("value"))
                    self.spans.append(
                        {
                            "service": resource.get("service.name"),
                            "name": s.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "attributes": attributes,
                        }
                    )

    def wait_for(self, predicate: Any, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [s for s in list(self.spans) if predicate(s)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no such span; received {self.spans}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


def _python(code: str, **env: str) -> dict[str, Any]:
    """Run `code` in a fresh Django process (no OTEL_* but `env`); its last line is JSON."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean["DJANGO_SETTINGS_MODULE"] = "rpgai.settings"
    clean["OTEL_EXPORTER_OTLP_ENDPOINT"] = ""  # "" wins over a .env file
    clean["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = ""
    clean.update(env)
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        cwd=processes.ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_an_endpoint_nothing_is_installed_and_a_span_costs_little():
    result = _python(
        """
import json, sys, time
from opentelemetry import trace
from rpgai import tracing
from rpgai.request_id import request_id_bound

again = tracing.configure()   # OpsConfig.ready called it already
headers = tracing.inject_headers({})
with request_id_bound("r-1"):
    start = time.perf_counter()
    for n in range(20000):
        with tracing.span("turn", campaign_id="c", turn_id=n) as s:
            s.set_attribute("rpgai.x", 1)
            tracing.event("e", n=n)
    per_span = (time.perf_counter() - start) / 20000
print(json.dumps({
    "enabled": tracing.enabled(),
    "again": again,
    "provider": type(trace.get_tracer_provider()).__name__,
    "sdk_loaded": "opentelemetry.sdk.trace" in sys.modules,
    "headers": headers,
    "recording": s.is_recording(),
    "per_span_us": per_span * 1e6,
}))
"""
    )
    assert result["enabled"] is False and result["again"] is False
    assert result["provider"] == "ProxyTracerProvider"
    assert result["sdk_loaded"] is False
    assert result["headers"] == {}
    assert result["recording"] is False
    # About a microsecond here; the bound is loose for a busy 2-core machine.
    assert result["per_span_us"] < 10, result


def test_with_an_endpoint_spans_go_out_by_otlp_http(collector):
    result = _python(
        """
import json
from opentelemetry import trace
from rpgai import tracing
from rpgai.request_id import request_id_bound

with request_id_bound("r-otlp"), tracing.span("turn", campaign_id="c-9", turn_id="t-9") as s:
    with tracing.span("model.call", step=1):
        pass
trace.get_tracer_provider().shutdown()   # as at exit: the batch goes out
print(json.dumps({
    "enabled": tracing.enabled(),
    "provider": type(trace.get_tracer_provider()).__name__,
    "trace_id": f"{s.get_span_context().trace_id:032x}",
}))
""",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
    )
    assert result["enabled"] is True and result["provider"] == "TracerProvider"
    assert collector.paths and all(
        p == "/v1/traces application/x-protobuf" for p in collector.paths
    )
    by_name = {s["name"]: s for s in collector.spans}
    assert set(by_name) == {"turn", "model.call"}
    turn, call = by_name["turn"], by_name["model.call"]
    assert turn["service"] == "rpgai-web"
    assert turn["trace_id"] == call["trace_id"] == result["trace_id"]
    assert call["parent_span_id"] == turn["span_id"]
    assert turn["attributes"] == {
        "rpgai.campaign_id": "c-9",
        "rpgai.turn_id": "t-9",
        "rpgai.request_id": "r-otlp",
    }
    assert call["attributes"]["rpgai.step"] == 1


@pytest.mark.services
@pytest.mark.celery_worker
def test_a_celery_worker_continues_the_trace_and_exports_it(campaign, alice, spans, collector):
    with processes.celery_worker(
        TASKS_IN_PROCESS="0",
        TTS_PROVIDER="none",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="",
        OTEL_SERVICE_NAME="",
        OTEL_BSP_SCHEDULE_DELAY="100",
    ):
        client = Client()
        client.force_login(alice)
        with tracing.span("test.request") as web:
            response = client.post(
                f"/api/campaigns/{campaign.id}/actions",
                {"action_id": str(uuid.uuid4()), "text": "I ring the bell"},
                content_type="application/json",
            )
        assert response.status_code == 202, response.content
        trace_id = f"{web.get_span_context().trace_id:032x}"
        [commit] = collector.wait_for(
            lambda s: s["name"] == "turn.commit" and s["trace_id"] == trace_id, timeout=40
        )
        [task] = collector.wait_for(
            lambda s: s["name"] == "task orchestrator.tasks.run_turn" and s["trace_id"] == trace_id
        )
    assert task["service"] == commit["service"] == "rpgai-worker"
    assert task["parent_span_id"] == f"{web.get_span_context().span_id:016x}"
    request_id = response["X-Request-ID"]
    assert task["attributes"]["rpgai.request_id"] == request_id
    assert commit["attributes"]["rpgai.request_id"] == request_id
    assert commit["attributes"]["rpgai.campaign_id"] == str(campaign.id)
