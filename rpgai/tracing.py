"""Tracing: optional OpenTelemetry spans, one trace per player message (docs/operations.md,
"Tracing").

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
Then `configure()`, called once per process (`rpgai.apps.OpsConfig.ready`, which Celery
workers run too), turns tracing on, and the first span builds a TracerProvider that
batches spans to that endpoint by OTLP/HTTP (protobuf). Off, nothing of the SDK is even
imported and `span()` returns a shared no-op context manager (well under a microsecond).

The rest of the code uses this module, never `opentelemetry` itself:

    from rpgai import tracing

    with tracing.span("model.call", campaign_id=campaign_id, turn_id=turn_id, step=2) as s:
        ...
        s.set_attribute("rpgai.output_mode", "json_object")   # an OTel Span
        tracing.event("model.retry", attempt=2)                # on the current span
        tracing.annotate(prompt_tokens=812)                    # on the current span

- `span(name, **attributes)`: a context manager, in sync code and in `async def` alike
  (`with`, not `async with`: the span is current in the coroutine's own context and so
  survives its awaits, and spans opened in tasks or threads it starts are its children).
  It yields the span: an OTel `Span`, a non-recording one when tracing is off, so its
  methods can always be called. Each keyword becomes the attribute `rpgai.<key>`; a
  key with a dot in it (`**{"http.method": "GET"}`) is used as it is; a None value is
  left out; a value that is not a str, bool, int or float (a UUID) is written as str.
  The current request id (`rpgai.request_id`) is added by itself. An exception that
  leaves the block is recorded on the span, marks it as an error, and goes on.
- `event(name, **attributes)`: a timestamped event on the current span (same keys).
- `annotate(**attributes)`: more attributes on the current span, for what is known only
  inside the block (the turn id, an outcome).
- Across Celery: `inject_headers(headers)` adds the current trace context
  (`traceparent`, `tracestate`) to a task message's headers (`rpgai.tasks` does it);
  the worker's `task_prerun` / `task_postrun` handlers (`celery_task_prerun`,
  `celery_task_postrun`, connected in `rpgai/celery.py`) make it the parent of the
  task's span. `context_from(headers)` does the same for a block of code.
- In process, contextvars carry the context: asyncio tasks created, `sync_to_async` /
  `database_sync_to_async` calls made and `loop.call_soon_threadsafe` /
  `run_coroutine_threadsafe` calls made inside a span are in its trace. A bare
  `threading.Thread` or `Timer` starts with an empty context: hand it
  `inject_headers({})` and open `context_from(those)` in it.
- Rules: close a span in the task and thread that opened it (one `with` block); no span
  per streamed token or delta (one per model step); no attribute carries player text,
  a prompt, a narration or state (ids, counts, codes and our own wording only).
- Tests: `use_exporter(InMemorySpanExporter())` sends this process's spans to an
  exporter (`tests/test_tracing.py`), `use_exporter(None)` turns tracing off again.

Span names in use: `ws.action` (realtime.consumers), `task <task name>` (rpgai.tasks,
the Celery handlers), `turn`, `model.call` (the turn and model-call code),
`turn.commit` (campaigns.tools), `voice.speak` (voice.tasks).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from rpgai.request_id import get_request_id

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

PREFIX = "rpgai."
REQUEST_ID = PREFIX + "request_id"
WEB_SERVICE_NAME = "rpgai-web"
WORKER_SERVICE_NAME = "rpgai-worker"
# What a task message carries (W3C Trace Context; `baggage` when someone sets it).
CARRIED_HEADERS = ("traceparent", "tracestate", "baggage")

# The tracer of the installed provider (until the first span, a _FirstUse standing for
# it); None while tracing is off: the fast path.
_tracer: Any = None
_provider: TracerProvider | None = None
_lock = threading.Lock()
# Set by rpgai/celery.py as a worker starts, before Django (and so `configure`) runs.
_default_service_name = WEB_SERVICE_NAME


def enabled() -> bool:
    return _tracer is not None


def _attribute_value(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_attribute_value(item) for item in value]
    return str(value)


def _attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {
        (key if "." in key else PREFIX + key): _attribute_value(value)
        for key, value in attributes.items()
        if value is not None
    }


class _NoSpan:
    """`span()` while tracing is off: enters with the non-recording span, does nothing."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return INVALID_SPAN

    def __exit__(self, *exc_info: object) -> bool:
        return False


_NO_SPAN = _NoSpan()


def span(name: str, **attributes: Any) -> AbstractContextManager[Span]:
    """A span around a `with` block, child of the current one (module docstring)."""
    tracer = _tracer
    if tracer is None:
        return _NO_SPAN
    values = _attributes(attributes)
    request_id = get_request_id()
    if request_id:
        values.setdefault(REQUEST_ID, request_id)
    return tracer.start_as_current_span(name, attributes=values)


def event(name: str, **attributes: Any) -> None:
    """An event on the current span (nothing when tracing is off or no span is open)."""
    if _tracer is not None:
        otel_trace.get_current_span().add_event(name, _attributes(attributes))


def annotate(**attributes: Any) -> None:
    """Attributes on the current span (nothing when tracing is off)."""
    if _tracer is not None:
        otel_trace.get_current_span().set_attributes(_attributes(attributes))


# --- Propagation -----------------------------------------------------------------------------


def inject_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """Add the current trace context to `headers` (a Celery message's); returns them."""
    if _tracer is not None:
        propagate.inject(headers)
    return headers


def carried_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The trace headers among `headers`."""
    return {
        key: value
        for key in CARRIED_HEADERS
        if isinstance(value := (headers or {}).get(key), str) and value
    }


@contextmanager
def context_from(headers: Mapping[str, Any] | None) -> Iterator[None]:
    """Within the block, the trace context carried in `headers` is the current one (the
    parent of the spans opened there). Without trace headers, or with tracing off, the
    block runs in the context it has."""
    carried = carried_headers(headers)
    if _tracer is None or not carried:
        yield
        return
    token = otel_context.attach(propagate.extract(carried))
    try:
        yield
    finally:
        otel_context.detach(token)


# --- Celery (worker side; the handlers are connected in rpgai/celery.py) ---------------------

# task id -> (its span, the context token to detach), from prerun to postrun.
_task_spans: dict[str, tuple[Span, object]] = {}


def _task_message_headers(task: Any) -> dict[str, str]:
    """The trace headers of the message the task runs from. With message protocol 2 a
    custom header is an attribute of `task.request`; some paths keep them in
    `request.headers`."""
    request = getattr(task, "request", None)
    found = carried_headers(getattr(request, "headers", None))
    for key in CARRIED_HEADERS:
        value = getattr(request, key, None)
        if isinstance(value, str) and value:
            found.setdefault(key, value)
    return found


def celery_task_prerun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    """`task_prerun` handler: the task's span, child of the enqueuer's span (from the
    message headers), made current until `celery_task_postrun`. Connect it after the
    request id's handler: the span takes the task's request id."""
    tracer = _tracer
    if tracer is None:
        return
    name = getattr(task, "name", None) or "unknown"
    parent = propagate.extract(_task_message_headers(task))
    task_kwargs = kwargs.get("kwargs") or {}
    attributes = _attributes(
        {
            "task": name,
            "task_id": task_id,
            "campaign_id": task_kwargs.get("campaign_id")
            if isinstance(task_kwargs, dict)
            else None,
            "retries": getattr(getattr(task, "request", None), "retries", None),
        }
    )
    request_id = get_request_id()
    if request_id:
        attributes[REQUEST_ID] = request_id
    current = tracer.start_span(
        f"task {name}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    )
    token = otel_context.attach(otel_trace.set_span_in_context(current, parent))
    _task_spans[task_id or ""] = (current, token)


def celery_task_postrun(
    task_id: str | None = None, state: str | None = None, **kwargs: Any
) -> None:
    """`task_postrun` handler: end the task's span (an error when the task failed) and
    leave its context."""
    started = _task_spans.pop(task_id or "", None)
    if started is None:
        return
    current, token = started
    if state:
        current.set_attribute(PREFIX + "task_state", state)
    if state == "FAILURE":
        current.set_status(Status(StatusCode.ERROR, "the task failed"))
    current.end()
    try:
        otel_context.detach(token)  # type: ignore[arg-type]
    except Exception:  # attached in another context (should not happen with Celery pools)
        log.debug("trace context of task %s attached elsewhere", task_id)


def worker_starting() -> None:
    """A Celery worker starts: its spans are named `rpgai-worker` unless
    OTEL_SERVICE_NAME says otherwise."""
    global _default_service_name
    _default_service_name = WORKER_SERVICE_NAME


# --- Set-up -----------------------------------------------------------------------------------


def _endpoints() -> tuple[str, str]:
    from django.conf import settings

    return (
        getattr(settings, "OTEL_EXPORTER_OTLP_ENDPOINT", "") or "",
        getattr(settings, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "") or "",
    )


def service_name() -> str:
    from django.conf import settings

    return getattr(settings, "OTEL_SERVICE_NAME", "") or _default_service_name


def configure() -> bool:
    """Turn tracing on when an OTLP endpoint is set (once per process; later calls do
    nothing). Returns whether tracing is on. With no endpoint nothing is installed: the
    global provider stays OpenTelemetry's no-op proxy and the SDK is not even imported.

    The provider itself is built at the first span, not here: by then a Celery worker has
    said what it is (its Django, and so this call, starts before `celeryd_init`), and a
    prefork pool has forked, so each process has its own exporter thread."""
    global _tracer
    with _lock:
        if _tracer is not None:
            return True
        endpoint, traces_endpoint = _endpoints()
        if not (endpoint or traces_endpoint):
            return False
        _tracer = _FirstUse(traces_endpoint or endpoint.rstrip("/") + "/v1/traces")
        log.info("tracing on: spans go to %s", _tracer.endpoint)
        return True


class _FirstUse:
    """The tracer until the first span asks for it: then the OTLP provider is built,
    installed globally, and put in its place."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def __getattr__(self, name: str) -> Any:
        return getattr(self._build(), name)

    def _build(self) -> otel_trace.Tracer:
        global _tracer, _provider
        with _lock:
            if _tracer is not self:
                return _tracer or otel_trace.NoOpTracer()  # built meanwhile, or turned off
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            # The exporter reads OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION and
            # the certificate variables itself.
            provider = _new_provider(BatchSpanProcessor(OTLPSpanExporter(endpoint=self.endpoint)))
            otel_trace.set_tracer_provider(provider)
            _tracer, _provider = provider.get_tracer("rpgai"), provider
            return _tracer


def _new_provider(processor: Any) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    # The sampler follows OTEL_TRACES_SAMPLER (default: every trace, parent-based).
    provider = TracerProvider(resource=Resource.create({"service.name": service_name()}))
    provider.add_span_processor(processor)
    return provider


def use_exporter(exporter: SpanExporter | None) -> None:
    """Send this process's spans to `exporter` as each one ends, or with None turn
    tracing off again. For tests and for printing a trace (docs/operations.md); the
    global provider is left alone (it can be set only once per process)."""
    global _tracer, _provider
    with _lock:
        if exporter is None:
            _tracer = _provider = None
            return
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = _new_provider(SimpleSpanProcessor(exporter))
        _tracer, _provider = provider.get_tracer("rpgai"), provider


def flush(timeout_millis: int = 5000) -> None:
    """Export what is waiting (a worker process about to exit)."""
    provider = _provider
    if provider is not None:
        provider.force_flush(timeout_millis)
