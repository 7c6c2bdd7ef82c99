"""Prometheus metrics (prometheus-client), served at /metrics (rpgai.ops_urls).

Names follow the Prometheus conventions (`rpgai_` prefix, base units, `_total` on
counters) and every label has a small, bounded set of values: no campaign, user or
turn ids. Model names come from campaign settings that a GM may type, so at most
`MODEL_LABELS_MAX` distinct ones are kept and the rest count as "other".

Who records what:
- `events_appended` is called by `campaigns.services._after_commit` for every commit;
- the room consumer calls `websocket_opened` / `websocket_closed` for its members;
- `llm.services.model_call` calls `model_call_observed` (model calls, tokens);
- `receivers_connect` (from `rpgai.apps.OpsConfig.ready`) listens to
  `campaigns.signals.events_committed` (turn latency and outcome, tokens per turn,
  speech seconds from `dm_audio_ready`);
- billing calls `spend_record` when it settles a cost.

Metrics live in the process that records them. Turns run in Celery workers in
production, so workers serve their own /metrics (`METRICS_WORKER_PORT`, see
rpgai/celery.py). Several processes sharing one port (a prefork pool, gunicorn-style
workers) need prometheus-client's multiprocess mode: set PROMETHEUS_MULTIPROC_DIR to an
empty, writable directory before the processes start; `registry_for_scrape` then
aggregates the files there (docs/operations.md).
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client import multiprocess as prometheus_multiprocess

log = structlog.get_logger(__name__)

MODEL_LABELS_MAX = 20
OUTCOME_LABELS_MAX = 20
OTHER = "other"

WEBSOCKET_CONNECTIONS = Gauge(
    "rpgai_websocket_connections",
    "Open WebSocket connections of campaign members in this process.",
    multiprocess_mode="livesum",
)
EVENTS_APPENDED = Counter(
    "rpgai_events_appended_total",
    "Events appended to campaign logs (committed), by event type.",
    ["type"],
)
MODEL_CALLS = Counter(
    "rpgai_model_calls_total",
    "Calls to the DM model, by provider, model and outcome (ok or an error code).",
    ["provider", "model", "outcome"],
)
TURN_TOKENS = Histogram(
    "rpgai_turn_tokens",
    "Model tokens used by one DM turn (all its calls, repair included), input or output.",
    ["kind"],
    buckets=(100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000),
)
TURN_LATENCY = Histogram(
    "rpgai_turn_latency_seconds",
    "From the last player action a turn answers to the turn's narration (or failure), "
    "by outcome: ok, fallback or failed.",
    ["outcome"],
    buckets=(0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60, 120, 300),
)
SPEECH_SECONDS = Counter(
    "rpgai_speech_seconds_total",
    "Seconds of narration audio synthesized (from dm_audio_ready events).",
)
SPEND_TODAY = Gauge(
    "rpgai_spend_today_usd",
    "Model and voice spend since 00:00 UTC today, in USD, as billing last settled it.",
    multiprocess_mode="mostrecent",
)
SPEND = Counter(
    "rpgai_spend_usd_total",
    "Model and voice spend settled by this process, in USD.",
    ["kind"],
)


# --- Bounded labels ------------------------------------------------------------------------

_label_lock = threading.Lock()
_seen_labels: dict[str, set[str]] = {}
_LABEL_TEXT = re.compile(r"[^A-Za-z0-9_.:/@+-]")


def bounded_label(kind: str, value: Any, limit: int) -> str:
    """`value` as a label, unless `limit` other values of this kind came first."""
    text = _LABEL_TEXT.sub("_", str(value or "none"))[:80] or "none"
    with _label_lock:
        seen = _seen_labels.setdefault(kind, set())
        if text in seen:
            return text
        if len(seen) >= limit:
            return OTHER
        seen.add(text)
        return text


# --- Recording -------------------------------------------------------------------------------


def events_appended(events: Iterable[Any]) -> None:
    """Count committed events by type (types come from the event registry: bounded)."""
    try:
        for event in events:
            EVENTS_APPENDED.labels(type=event.type).inc()
    except Exception:  # metrics never break a write
        log.warning("metrics.events_appended_failed", exc_info=True)


def websocket_opened() -> None:
    WEBSOCKET_CONNECTIONS.inc()


def websocket_closed() -> None:
    WEBSOCKET_CONNECTIONS.dec()


def model_call_recorded(*, provider: str, model: str, outcome: str) -> None:
    MODEL_CALLS.labels(
        provider=bounded_label("provider", provider, MODEL_LABELS_MAX),
        model=bounded_label("model", model, MODEL_LABELS_MAX),
        outcome=bounded_label("outcome", outcome or "ok", OUTCOME_LABELS_MAX),
    ).inc()


def speech_recorded(*, seconds: float) -> None:
    if seconds > 0:
        SPEECH_SECONDS.inc(seconds)


def spend_record(
    *, usd: Decimal | float, kind: str = "model", today_usd: Decimal | float | None = None
) -> None:
    """For billing: a settled cost (`kind` "model" or "voice") and, when known, the
    day's total so far."""
    if usd and float(usd) > 0:
        SPEND.labels(kind="voice" if kind == "voice" else "model").inc(float(usd))
    if today_usd is not None:
        SPEND_TODAY.set(float(today_usd))


# --- Turns, from llm.services and signals ----------------------------------------------------

# Tokens of turns still running in this process, by turn id (a turn runs in one process).
_TURNS_MAX = 1000
_turn_tokens: OrderedDict[str, list[int]] = OrderedDict()
_turn_lock = threading.Lock()


def model_call_observed(
    *,
    provider: str = "",
    model: str = "",
    usage: Any = None,
    error: str | None = None,
    turn_id: str = "",
) -> None:
    """One model call ended (llm.services.model_call): its outcome, and its tokens
    towards its turn's total."""
    try:
        model_call_recorded(provider=provider, model=model, outcome=error or "ok")
        if usage is None or not turn_id:
            return
        with _turn_lock:
            tokens = _turn_tokens.setdefault(str(turn_id), [0, 0])
            tokens[0] += int(getattr(usage, "input_tokens", 0) or 0)
            tokens[1] += int(getattr(usage, "output_tokens", 0) or 0)
            while len(_turn_tokens) > _TURNS_MAX:  # turns that died before their end
                _turn_tokens.popitem(last=False)
    except Exception:
        log.warning("metrics.model_call_failed", exc_info=True)


def _on_events_committed(
    sender: Any, *, campaign_id: Any, events: list[Any], **kwargs: Any
) -> None:
    try:
        for event in events:
            if event.type in ("dm_narration", "turn_failed"):
                _turn_finished(campaign_id, event)
            elif event.type == "dm_audio_ready":
                speech_recorded(seconds=(event.payload.get("duration_ms") or 0) / 1000)
    except Exception:
        log.warning("metrics.turn_failed_to_record", exc_info=True)


def _turn_finished(campaign_id: Any, event: Any) -> None:
    payload = event.payload
    if event.type == "turn_failed":
        outcome = "failed"
    else:
        outcome = "fallback" if payload.get("fallback") else "ok"
    with _turn_lock:
        tokens = _turn_tokens.pop(str(payload.get("turn_id", "")), None)
    if tokens is not None:
        TURN_TOKENS.labels(kind="input").observe(tokens[0])
        TURN_TOKENS.labels(kind="output").observe(tokens[1])
    latency = _latency_seconds(campaign_id, payload.get("through_seq") or 0, event.created_at)
    if latency is not None:
        TURN_LATENCY.labels(outcome=outcome).observe(latency)
    log.info(
        "turn.finished",
        turn_id=str(payload.get("turn_id", "")),
        seq=event.seq,
        outcome=outcome,
        code=payload.get("code"),
        latency_s=None if latency is None else round(latency, 3),
        input_tokens=tokens[0] if tokens else None,
        output_tokens=tokens[1] if tokens else None,
    )


def _latency_seconds(
    campaign_id: Any, through_seq: int, finished_at: datetime | None
) -> float | None:
    if through_seq <= 0:
        return None
    from campaigns.models import Event

    started_at = (
        Event.objects.filter(campaign_id=campaign_id, seq=through_seq)
        .values_list("created_at", flat=True)
        .first()
    )
    if started_at is None:
        return None
    return max(0.0, ((finished_at or datetime.now(UTC)) - started_at).total_seconds())


def receivers_connect() -> None:
    """Listen to the campaign signals (called once, at app start)."""
    from campaigns.signals import events_committed

    events_committed.connect(_on_events_committed, dispatch_uid="rpgai.metrics.turns")


# --- Exposition ---------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def registry_for_scrape() -> CollectorRegistry:
    """The registry /metrics serves: this process's, or every process's in multiprocess mode."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def process_dead(pid: int) -> None:
    """Forget a dead process's live gauges (multiprocess mode; Celery child exit)."""
    if multiprocess_dir():
        prometheus_multiprocess.mark_process_dead(pid)
