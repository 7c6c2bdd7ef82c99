"""Token buckets: WebSocket messages and model calls.

A bucket holds up to `capacity` tokens and refills at `rate` tokens per second; a
message (or model call) takes one token from each of its buckets, all or nothing, so
that a message refused by one bucket never drains another: a flooding player empties
their own buckets, not the campaign's.

- Per connection: in this process's memory. A connection lives on one process, and a
  flood from it is refused without any I/O.
- Per user and per campaign: in the shared cache, so that they hold across processes:
  a Lua script on Redis when REDIS_URL is set (atomic, on Redis's clock), else the
  local-memory cache under a lock (embedded mode has one process).

`model_call_allowed(campaign_id, user_id)` is for the orchestrator: call it before each
model call; False means skip the call (append `turn_failed` with code `rate_limited`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

KEY_PREFIX = "throttle"


@dataclass(frozen=True)
class Bucket:
    key: str
    capacity: float
    rate: float  # tokens per second


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0
    limited_by: str = ""

    @property
    def detail(self) -> str:
        return f"too many messages; slow down (retry in {max(self.retry_after, 0.1):.1f} s)"


ALLOWED = Decision(True)

# What a player is told when their action waits behind their earlier ones, or is refused
# by the throttle (CONTRACTS §7 "Order and pacing": never a silent drop).
PACING_NOTICE = "The DM is still answering your last actions"


def action_refused_detail(decision: Decision) -> str:
    """The words for a player's action the throttle refused (the page sends it again)."""
    wait = max(decision.retry_after, 0.1)
    return f"{PACING_NOTICE}. This one was not taken yet: it can go again in {wait:.1f} s."


def action_waiting_detail(waiting: int) -> str:
    """The words for an action taken while `waiting` earlier ones of the same player are
    still unanswered."""
    earlier = "your earlier action" if waiting == 1 else f"your {waiting} earlier actions"
    return f"{PACING_NOTICE}. This one is answered after {earlier}."


# --- Buckets in the shared cache ----------------------------------------------------------

_TAKE_LUA = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local levels = {}
for i = 1, #KEYS do
  local capacity = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', KEYS[i], 'level', 'ts')
  local level = tonumber(state[1])
  local ts = tonumber(state[2])
  if level == nil or ts == nil then
    level = capacity
    ts = now
  end
  level = math.min(capacity, level + math.max(0, now - ts) * rate)
  if level < 1 then
    return {0, i, tostring((1 - level) / rate)}
  end
  levels[i] = level
end
for i = 1, #KEYS do
  local capacity = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  redis.call('HSET', KEYS[i], 'level', tostring(levels[i] - 1), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(capacity / rate * 1000) + 1000)
end
return {1, 0, '0'}
"""

_script_lock = threading.Lock()
_scripts: dict[int, Any] = {}
_local_lock = threading.Lock()


def _cache() -> Any:
    return caches["default"]


def _cache_key(key: str) -> str:
    return f"{getattr(settings, 'THROTTLE_CACHE_PREFIX', KEY_PREFIX)}:{key}"


def take(buckets: list[Bucket]) -> Decision:
    """Take one token from every bucket, or from none. Blocking (a Redis round trip when
    the cache is Redis): async code calls `atake`."""
    if not buckets:
        return ALLOWED
    if isinstance(_cache(), RedisCache):
        return _take_redis(buckets)
    return _take_local(buckets)


async def atake(buckets: list[Bucket]) -> Decision:
    if isinstance(_cache(), RedisCache):
        return await sync_to_async(_take_redis, thread_sensitive=False)(buckets)
    return _take_local(buckets)


def _take_redis(buckets: list[Bucket]) -> Decision:
    cache = _cache()
    keys = [cache.make_and_validate_key(_cache_key(b.key)) for b in buckets]
    client = cache._cache.get_client(keys[0], write=True)
    with _script_lock:
        script = _scripts.get(id(client))
        if script is None:
            script = _scripts[id(client)] = client.register_script(_TAKE_LUA)
    args: list[float] = []
    for bucket in buckets:
        args += [bucket.capacity, bucket.rate]
    allowed, index, wait = script(keys=keys, args=args, client=client)
    if allowed:
        return ALLOWED
    return Decision(False, float(wait), buckets[int(index) - 1].key)


def _take_local(buckets: list[Bucket]) -> Decision:
    cache = _cache()
    keys = [_cache_key(b.key) for b in buckets]
    with _local_lock:
        now = time.monotonic()
        states = cache.get_many(keys)
        levels = []
        for bucket, key in zip(buckets, keys, strict=True):
            level, ts = states.get(key, (bucket.capacity, now))
            level = min(bucket.capacity, level + max(0.0, now - ts) * bucket.rate)
            if level < 1:
                return Decision(False, (1 - level) / bucket.rate, bucket.key)
            levels.append(level)
        for bucket, key, level in zip(buckets, keys, levels, strict=True):
            cache.set(key, (level - 1, now), timeout=int(bucket.capacity / bucket.rate) + 2)
    return ALLOWED


# --- Per connection, in memory ------------------------------------------------------------


class LocalBucket:
    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.level = capacity
        self.ts = time.monotonic()

    def take(self) -> Decision:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.ts) * self.rate)
        self.ts = now
        if self.level < 1:
            return Decision(False, (1 - self.level) / self.rate, "connection")
        self.level -= 1
        return ALLOWED


_connection_buckets: weakref.WeakKeyDictionary[Any, LocalBucket] = weakref.WeakKeyDictionary()


# --- WebSocket messages ---------------------------------------------------------------------


async def ws_message_allowed(
    *, connection: Any, user_id: uuid.UUID | str, campaign_id: uuid.UUID | str
) -> Decision:
    """One client message on `connection` (the consumer): allowed, or refused with how
    long to wait. A refused message must not be processed; the socket stays open."""
    limits = settings.WS_THROTTLE
    bucket = _connection_buckets.get(connection)
    if bucket is None:
        bucket = _connection_buckets[connection] = LocalBucket(*limits["connection"])
    decision = bucket.take()
    if not decision.allowed:
        return decision
    return await atake(
        [
            Bucket(f"ws:user:{user_id}", *limits["user"]),
            Bucket(f"ws:campaign:{campaign_id}", *limits["campaign"]),
        ]
    )


def action_id_hint(text_data: str | None) -> str | None:
    """The `action_id` of a refused message, so that the client knows which action to
    send again; only looked for in messages of a sane size."""
    if not text_data or len(text_data) > settings.WS_MAX_MESSAGE_BYTES:
        return None
    try:
        data = json.loads(text_data)
    except (ValueError, RecursionError):
        return None
    action_id = data.get("action_id") if isinstance(data, dict) else None
    return action_id if isinstance(action_id, str) and len(action_id) <= 64 else None


# --- Model calls -----------------------------------------------------------------------------


def _model_buckets(campaign_id: uuid.UUID | str, user_id: uuid.UUID | str | None) -> list[Bucket]:
    per_campaign = settings.MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE
    per_user = settings.MODEL_CALLS_PER_USER_PER_MINUTE
    buckets = [Bucket(f"model:campaign:{campaign_id}", per_campaign, per_campaign / 60)]
    if user_id is not None:
        buckets.append(Bucket(f"model:user:{user_id}", per_user, per_user / 60))
    return buckets


def model_call_allowed(campaign_id: uuid.UUID | str, user_id: uuid.UUID | str | None) -> bool:
    """Take one model call from the campaign's and the user's per-minute allowance
    (settings MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE, MODEL_CALLS_PER_USER_PER_MINUTE).
    `user_id` is the player whose action started the turn, or None for a turn with no
    single author (only the campaign's allowance applies). Blocking: from async code use
    `amodel_call_allowed`."""
    return take(_model_buckets(campaign_id, user_id)).allowed


async def amodel_call_allowed(
    campaign_id: uuid.UUID | str, user_id: uuid.UUID | str | None
) -> bool:
    return (await atake(_model_buckets(campaign_id, user_id))).allowed
