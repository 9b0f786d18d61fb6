"""Settings for kimiweb, read from the environment (12-factor, django-environ).

Every knob is an environment variable; README.md lists them. Defaults are for a developer machine;
`DEBUG=false` with a real `SECRET_KEY` and `ALLOWED_HOSTS` is the production-safe mode.
"""

import re
from datetime import timedelta
from pathlib import Path

import environ
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from agent import stream
from devstack.services import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL

BASE_DIR = Path(__file__).resolve().parent.parent


def read_or_create_secret_key(path: Path) -> str:
    """This install's own key: read from `path`, or generated into it (mode 0600) on first use.

    The key is written to a private temporary file (O_EXCL) and hard-linked into place, so processes
    starting at once agree on one key and none reads a half-written file.
    """
    import os
    import secrets

    from django.core.exceptions import ImproperlyConfigured

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(50) + "\n")
            os.link(draft, path)
        except FileExistsError:
            pass  # another process created it first; use theirs
        finally:
            draft.unlink(missing_ok=True)
    key = path.read_text().strip()
    if not key:
        raise ImproperlyConfigured(f"{path} is empty; delete it to generate a new secret key")
    return key


env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=True)
# No key ships with the code: development installs generate one into var/secret_key (mode 0600) on
# first use; production (DEBUG=false) must set SECRET_KEY.
SECRET_KEY = env("SECRET_KEY", default=None) or (
    read_or_create_secret_key(Path(env("SECRET_KEY_FILE", default=str(BASE_DIR / "var" / "secret_key"))))
    if DEBUG
    else env("SECRET_KEY")
)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Artifacts (code from answers rendered live) load from this origin when set, e.g.
# `https://artifacts.example.org`: the same web process answers it with the artifact runtime only.
ARTIFACT_ORIGIN = env.str("ARTIFACT_ORIGIN", default="").rstrip("/")
if ARTIFACT_ORIGIN:
    ALLOWED_HOSTS.append(ARTIFACT_ORIGIN.split("://", 1)[-1].split(":")[0])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_htmx",
    "channels",
    "axes",
    "chat",
    "documents",
    "corpus",
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "chat.artifacts.ArtifactHostMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "chat.middleware.PublicErrorPagesMiddleware",
    "chat.middleware.RejectInvalidTextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "chat.middleware.ContentSecurityPolicyMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "kimiweb.urls"
ASGI_APPLICATION = "kimiweb.asgi.application"

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
                "chat.artifacts.runtime_context",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=DEFAULT_DATABASE_URL)}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Fail fast (and let /healthz answer 503) instead of hanging when Postgres is unreachable.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
    "connect_timeout", env.int("DB_CONNECT_TIMEOUT", default=5)
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default=DEFAULT_REDIS_URL)

# One namespace per installation: it prefixes every key this installation keeps in Redis (Celery's
# broker and result keys, the Channels layer and its group names, turn streams, cancel flags, rate
# limits, the cache), so installations sharing one Redis server never take each other's work.
# Default: the database's name (two installations with one database are one installation).
KIMIWEB_NAMESPACE = (
    env("KIMIWEB_NAMESPACE", default="")
    or re.sub(r"[^A-Za-z0-9_.-]", "_", str(DATABASES["default"].get("NAME") or "kimiweb"))[:40]
)
if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", KIMIWEB_NAMESPACE):
    raise environ.ImproperlyConfigured(
        f"KIMIWEB_NAMESPACE={KIMIWEB_NAMESPACE!r}: use 1-40 letters, digits, '_', '.' or '-'"
    )

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 defaults socket_timeout to 5 s, the same as channels-redis's 5 s BZPOPMIN: an idle
        # socket's receive then times out and the consumer dies with 1011 (redis/redis-py#4091). It also
        # caps a pool at 100 connections and fails (not waits) past that: 100 sockets connecting at once
        # to one Daphne got MaxConnectionsError.
        # After a Redis restart every pooled connection is dead: without retries each one failed a
        # socket's connect with 500 in turn. `retry` reconnects and sends the command again.
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    "socket_timeout": 15,
                    "max_connections": 2000,
                    "retry": Retry(ExponentialBackoff(cap=2.0, base=0.1), 5),
                    "retry_on_error": [RedisConnectionError],
                }
            ],
            "prefix": f"{KIMIWEB_NAMESPACE}:asgi",
            "capacity": 5000,
            "expiry": 60,
        },
    }
}
# CHANNEL_LAYER=pubsub: Redis pub/sub instead (one PUBLISH per event, however many sockets watch);
# about 2.6x less CPU per delivered event in a 20-socket run. At-most-once delivery is enough here:
# the chat consumer fills any gap from the turn's Redis stream.
if env("CHANNEL_LAYER", default="core") == "pubsub":
    CHANNEL_LAYERS["default"] = {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{KIMIWEB_NAMESPACE}:asgi"},
    }

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": KIMIWEB_NAMESPACE,
    }
}

# Celery: a queue for agent turns (and one for extracting uploads, below). Turns of hundreds of steps can run for an hour or more, so the
# broker's visibility timeout must exceed the longest turn, or Redis redelivers a turn still running.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_TASK_DEFAULT_QUEUE = "agent"
# Extracting uploads has a queue and a worker of its own (`-Q documents`), so a 2000-page PDF or an
# extraction running to its deadline never holds a turn's worker slot, and turns never delay uploads.
DOCUMENTS_QUEUE = "documents"
CELERY_TASK_ROUTES = {"documents.tasks.extract_file": {"queue": DOCUMENTS_QUEUE}}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Every broker key (the `agent` queue's list, unacked sets, bindings, fanout channels) and result key
# starts with the namespace, so `-Q agent` consumes only this installation's queue.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=6 * 3600),
    "global_keyprefix": f"{KIMIWEB_NAMESPACE}:",
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"global_keyprefix": f"{KIMIWEB_NAMESPACE}:"}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

# The model server: any OpenAI-compatible endpoint (our inference service, SGLang, vLLM, Moonshot).
LLM_BASE_URL = env("LLM_BASE_URL", default="http://127.0.0.1:30000/v1")
LLM_MODEL = env("LLM_MODEL", default="default")
LLM_API_KEY = env("LLM_API_KEY", default="none")
# Unset: the model server's own sampling defaults. `make run` sets 0.2 for the bundled SmolLM2.
LLM_TEMPERATURE = env("LLM_TEMPERATURE", cast=float, default=None)

# Agent limits.
AGENT_MAX_STEPS = env.int("AGENT_MAX_STEPS", default=300)
AGENT_MAX_STEP_TOKENS = env.int("AGENT_MAX_STEP_TOKENS", default=4096)
AGENT_MAX_TURN_TOKENS = env.int("AGENT_MAX_TURN_TOKENS", default=2_000_000)
AGENT_MAX_TURN_SECONDS = env.int("AGENT_MAX_TURN_SECONDS", default=3600)
AGENT_CONTEXT_TOKENS = env.int("AGENT_CONTEXT_TOKENS", default=32768)
AGENT_TOOL_RESULT_CHARS = env.int("AGENT_TOOL_RESULT_CHARS", default=8000)
# How long a worker's claim on a running turn lasts unless renewed: its heartbeat renews it every
# third of this, so a dead worker's turn is taken over (and continued) this long after its last
# renewal at most - the task is redelivered at once and waits out the rest of the lease.
AGENT_LEASE_SECONDS = env.int("AGENT_LEASE_SECONDS", default=4)
# How long a worker retries a turn's writes (with backoff) while Postgres is unreachable before the
# turn fails; the loop waits meanwhile, so a restart shorter than this loses nothing.
AGENT_DB_RETRY_SECONDS = env.int("AGENT_DB_RETRY_SECONDS", default=60)
# Each turn's event stream keeps at most this many entries and expires this long after the turn ends.
AGENT_EVENTS_MAXLEN = env.int("AGENT_EVENTS_MAXLEN", default=stream.EVENTS_MAXLEN)
AGENT_EVENTS_TTL = env.int("AGENT_EVENTS_TTL", default=stream.EVENTS_TTL)
# A worker that dies while others keep running leaves its turn's lease to lapse; this sweep (run by
# exactly one beat process) hands such turns to a live worker, which resumes them from the last
# persisted step. Workers also sweep once when they start.
CELERY_BEAT_SCHEDULE = {
    "resume-orphaned-turns": {
        "task": "agent.tasks.resume_orphaned_turns",
        "schedule": float(AGENT_LEASE_SECONDS),
    }
}

# Tools.
SEARCH_BACKEND = env("SEARCH_BACKEND", default="local")  # local | searxng | brave | tavily
SEARXNG_URL = env("SEARXNG_URL", default="http://127.0.0.1:8080")
BRAVE_API_KEY = env("BRAVE_API_KEY", default="")
TAVILY_API_KEY = env("TAVILY_API_KEY", default="")

# Chat limits.
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=32000)
CHAT_TURNS_PER_MINUTE = env.int("CHAT_TURNS_PER_MINUTE", default=10)
# Several accounts behind one address share this; queued turns across the installation past
# CHAT_MAX_QUEUED_TURNS are refused with "busy, try again" instead of waiting without end.
CHAT_TURNS_PER_MINUTE_PER_IP = env.int("CHAT_TURNS_PER_MINUTE_PER_IP", default=30)
CHAT_MAX_QUEUED_TURNS = env.int("CHAT_MAX_QUEUED_TURNS", default=200)

# Documents users upload into conversations: limits on what is accepted and on what extraction reads.
# Extraction runs in a child process of the worker with an address-space cap, a CPU-time cap and a
# wall-clock timeout; past any of them the file fails with a message, the worker goes on.
DOCUMENTS_MAX_FILE_BYTES = env.int("DOCUMENTS_MAX_FILE_BYTES", default=50 * 1024 * 1024)
DOCUMENTS_MAX_USER_BYTES = env.int("DOCUMENTS_MAX_USER_BYTES", default=1024 * 1024 * 1024)
DOCUMENTS_MAX_PAGES = env.int("DOCUMENTS_MAX_PAGES", default=2000)  # pages, slides or sections
DOCUMENTS_MAX_SHEETS = env.int("DOCUMENTS_MAX_SHEETS", default=50)
DOCUMENTS_MAX_SHEET_ROWS = env.int("DOCUMENTS_MAX_SHEET_ROWS", default=5000)  # rows read per sheet
DOCUMENTS_MAX_CHARS = env.int("DOCUMENTS_MAX_CHARS", default=20_000_000)  # text kept per file
DOCUMENTS_MAX_UNZIPPED_BYTES = env.int("DOCUMENTS_MAX_UNZIPPED_BYTES", default=300 * 1024 * 1024)
DOCUMENTS_MAX_ZIP_RATIO = env.int("DOCUMENTS_MAX_ZIP_RATIO", default=200)
DOCUMENTS_EXTRACT_SECONDS = env.int("DOCUMENTS_EXTRACT_SECONDS", default=300)  # wall clock per file
DOCUMENTS_EXTRACT_MEMORY_BYTES = env.int("DOCUMENTS_EXTRACT_MEMORY_BYTES", default=2 * 1024**3)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Self-hosted instances often close registration once their people have accounts.
SIGNUP_ENABLED = env.bool("SIGNUP_ENABLED", default=True)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# Log-in throttling (django-axes, counted in Postgres so every web process agrees): after
# LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, that pair is locked out
# for LOGIN_LOCKOUT_MINUTES; a successful log-in resets the count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env.bool("LOGIN_THROTTLE_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# Log-in attempts, sign-ups and password-reset e-mails per client address (django-ratelimit, Redis).
LOGIN_RATE = env("LOGIN_RATE", default="30/m")
SIGNUP_RATE = env("SIGNUP_RATE", default="5/h")
PASSWORD_RESET_RATE = env("PASSWORD_RESET_RATE", default="5/h")

# E-mail (password reset): printed to the console unless EMAIL_URL names an SMTP server, e.g.
# smtp+tls://user:password@mail.example.org:587.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="kimiweb <noreply@localhost>")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"
# Attachments (files tools write, files users upload): Django's storage API, on the filesystem under
# var/ by default. They are served only through the owner-checked views, never from MEDIA_URL.
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "var" / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Health probes (load balancer, compose) call over plain HTTP from inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}
