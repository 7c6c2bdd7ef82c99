"""The set-up files agree with the code: docker-compose.yml, deploy/nginx.conf, Dockerfile,
Makefile, .ci/run.

Docker is not available where the tests run, so the compose file is checked by reading
it: its services, that every variable it sets is one the settings read, that every
command names a module, app, management command, option and queue that exists, and that
nginx's upstreams are the compose services on the ports they listen on. nginx.conf is
parsed here, and checked by `nginx -t` when nginx is installed. The Makefile is checked
with `make -n` (prints the recipes without running them) in a scratch folder.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import environ
import pytest
import yaml
from celery import Celery
from daphne.cli import CommandLineInterface
from django.conf import settings
from django.core.management import get_commands
from django.urls import resolve

from realtime.routing import websocket_urlpatterns

ROOT = Path(__file__).resolve().parent.parent
WEB_SERVICES = ("web1", "web2")
WORKER_SERVICES = ("worker-turns", "worker-voice")
APP_SERVICES = ("migrate", *WEB_SERVICES, *WORKER_SERVICES)
CONTRACT_VARIABLES = {
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "JWT_SIGNING_KEY",
    "INTERNAL_TOOLS_SECRET",
    "DEBUG",
    "ALLOWED_HOSTS",
    "DM_MODEL_PROVIDER",
}
SECRETS = ("SECRET_KEY", "JWT_SIGNING_KEY", "INTERNAL_TOOLS_SECRET")
# Read by a library, not by the settings: each with the file of ours that documents and
# uses it (the test checks that it still does).
LIBRARY_VARIABLES = {"PROMETHEUS_MULTIPROC_DIR": ROOT / "rpgai" / "metrics.py"}
APP_DIR = "/app"  # the Dockerfile's WORKDIR


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def settings_variables(source: str | None = None) -> set[str]:
    """Every environment variable name that rpgai/settings.py (or `source`) reads."""
    if source is None:
        source = (ROOT / "rpgai" / "settings.py").read_text()
    through_environ = re.findall(
        r"\benv(?:\.(?:str|bool|int|float|list|tuple|dict|json|url|db_url|cache_url|path))?"
        r"\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']",
        source,
    )
    through_os = re.findall(
        r"os\.(?:environ\.get\(|getenv\(|environ\[)\s*[\"']([A-Z][A-Z0-9_]*)[\"']", source
    )
    return set(through_environ) | set(through_os)


def with_defaults(value: str) -> str:
    """Compose interpolation with each variable's default (`${X:-default}` -> default)."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)


def known_queues() -> set[str]:
    """The queues tasks are sent to: the routes' and the default one."""
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    return routed | {settings.CELERY_TASK_DEFAULT_QUEUE}


def worker_queues(command: list[str]) -> set[str]:
    return set(command[command.index("-Q") + 1].split(","))


@functools.cache
def celery_worker_options() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "rpgai", "worker", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_command_exists(command: list[str]) -> None:
    """The program of a container command and what it names exist in this code base."""
    program = command[0]
    if program == "daphne":
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                parsed = CommandLineInterface().parser.parse_args(command[1:])
        except SystemExit:
            raise AssertionError(f"daphne does not take these arguments: {command!r}") from None
        module, _, attribute = parsed.application.partition(":")
        assert attribute, f"daphne needs module:attribute, got {parsed.application!r}"
        assert getattr(importlib.import_module(module), attribute, None) is not None, command
    elif program == "celery":
        module = command[command.index("-A") + 1]
        apps = [v for v in vars(importlib.import_module(module)).values() if isinstance(v, Celery)]
        assert apps, f"`celery -A {module}`: {module} has no Celery app"
        if "worker" in command:
            unknown = worker_queues(command) - known_queues()
            assert not unknown, f"no task is ever sent to the queues {unknown}"
            options = {word.split("=")[0] for word in command if word.startswith("--")}
            for option in options:
                assert re.search(rf"(^|\s){re.escape(option)}\b", celery_worker_options(), re.M), (
                    f"celery worker has no option {option}"
                )
    elif program == "python" and command[1] == "manage.py":
        assert command[2] in get_commands(), f"no management command {command[2]!r}"
    else:
        pytest.fail(f"unknown container command {command!r}: teach this test what it runs")


def probe_url(service: dict[str, Any]) -> str:
    """The URL a container's healthcheck asks."""
    probe = " ".join(service["healthcheck"]["test"])
    match = re.search(r"https?://127\.0\.0\.1(?::\d+)?/[\w/-]*", probe)
    assert match, f"the healthcheck asks no URL of the server: {probe!r}"
    return match.group(0)


# --- nginx.conf: a small parser (directives, blocks, comments, quotes) ----------------------


def nginx_parse(text: str) -> list[tuple[str, list[str], list | None]]:
    """nginx configuration as (name, args, children or None) tuples."""
    tokens = re.findall(r"#[^\n]*|\"(?:[^\"\\]|\\.)*\"|'[^']*'|[{};]|[^\s{};\"'#]+", text)
    stack: list[list] = [[]]
    words: list[str] = []
    for token in tokens:
        if token.startswith("#"):
            continue
        if token == ";":
            stack[-1].append((words[0], words[1:], None))
            words = []
        elif token == "{":
            block: list = []
            stack[-1].append((words[0], words[1:], block))
            stack.append(block)
            words = []
        elif token == "}":
            assert not words, f"unterminated directive {words}"
            stack.pop()
        else:
            words.append(token[1:-1] if token[0] in "\"'" else token)
    assert len(stack) == 1 and not words, "unbalanced braces in nginx.conf"
    return stack[0]


def directives(block: list, name: str) -> list[tuple[str, list[str], list | None]]:
    return [d for d in block if d[0] == name]


def one(block: list, name: str, *args: str) -> tuple[str, list[str], list | None]:
    found = [d for d in directives(block, name) if list(d[1][: len(args)]) == list(args)]
    assert len(found) == 1, f"expected one {name} {' '.join(args)}, found {len(found)}"
    return found[0]


def headers(block: list) -> dict[str, str]:
    return {d[1][0].lower(): " ".join(d[1][1:]) for d in directives(block, "proxy_set_header")}


def seconds(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()
    return int(number) * {"ms": 0, None: 1, "s": 1, "m": 60, "h": 3600}[unit]


@pytest.fixture(scope="module")
def nginx() -> list:
    return nginx_parse((ROOT / "deploy" / "nginx.conf").read_text())


# --- docker-compose.yml --------------------------------------------------------------------


def test_compose_has_every_service_with_healthchecks_and_ordered_start(compose):
    services = compose["services"]
    assert set(services) >= {"postgres", "redis", "nginx", *APP_SERVICES}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["nginx"]["image"].startswith("nginx:")
    for name in ("postgres", "redis", "nginx", *WEB_SERVICES, *WORKER_SERVICES):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"

    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in (*WEB_SERVICES, *WORKER_SERVICES):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert "ports" not in services[name], f"{name} must be reached through nginx only"
    for name in WEB_SERVICES:
        assert services["nginx"]["depends_on"][name]["condition"] == "service_healthy"
    assert services["nginx"]["ports"][0].split(":")[-1] == "80"


def test_compose_sets_only_variables_that_the_settings_read(compose):
    known = settings_variables()
    assert known >= CONTRACT_VARIABLES, "the settings stopped reading a CONTRACTS §5 variable"
    for variable, reader in LIBRARY_VARIABLES.items():
        assert variable in reader.read_text(), f"{reader.name} no longer uses {variable}"
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        unknown = set(environment) - known - set(LIBRARY_VARIABLES)
        assert not unknown, f"{name} sets variables rpgai/settings.py never reads: {unknown}"
        assert set(environment) >= CONTRACT_VARIABLES, name
        assert environment["DEBUG"] == "0"


def test_the_variable_check_fails_for_a_renamed_setting(compose):
    # Renaming a variable in the settings must make the compose file wrong.
    source = (ROOT / "rpgai" / "settings.py").read_text()
    used = set(compose["services"]["worker-turns"]["environment"])
    assert {"METRICS_WORKER_PORT", "CELERY_VISIBILITY_TIMEOUT_SECONDS"} <= used
    for variable in ("METRICS_WORKER_PORT", "CELERY_VISIBILITY_TIMEOUT_SECONDS"):
        assert variable in settings_variables(source)
        renamed = source.replace(f'"{variable}"', '"SOMETHING_ELSE"')
        assert variable not in settings_variables(renamed)


def test_compose_never_ships_a_default_secret(compose):
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        for secret in SECRETS:
            assert re.fullmatch(rf"\$\{{{secret}:\?[^}}]+\}}", environment[secret]), (
                f"{name}: {secret} must be required from the environment, not defaulted"
            )


def test_compose_urls_point_at_its_own_services(compose):
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        database = environ.Env.db_url_config(with_defaults(environment["DATABASE_URL"]))
        assert database["ENGINE"] == "django.db.backends.postgresql"
        assert database["HOST"] == "postgres"
        postgres = compose["services"]["postgres"]["environment"]
        assert database["NAME"] == postgres["POSTGRES_DB"]
        assert database["USER"] == postgres["POSTGRES_USER"]
        assert with_defaults(environment["REDIS_URL"]).startswith("redis://redis:6379/")


def test_compose_commands_refer_to_code_that_exists(compose):
    for name in APP_SERVICES:
        assert_command_exists(compose["services"][name]["command"])
    assert compose["services"]["migrate"]["command"][2] == "migrate"
    for name in WEB_SERVICES:
        assert compose["services"][name]["command"][0] == "daphne"
        assert "--proxy-headers" in compose["services"][name]["command"]


def test_compose_workers_consume_every_queue_turns_and_voice_apart(compose):
    services = compose["services"]
    queues = {name: worker_queues(services[name]["command"]) for name in WORKER_SERVICES}
    assert set().union(*queues.values()) >= known_queues(), "a queue no worker consumes"
    turns = {r["queue"] for p, r in settings.CELERY_TASK_ROUTES.items() if p.startswith("orch")}
    voice = {r["queue"] for p, r in settings.CELERY_TASK_ROUTES.items() if p.startswith("voice")}
    assert turns == {"turns"} and voice == {"voice"}
    # Turns alone on the turns worker: speech and memory are CPU work, kept apart.
    assert queues["worker-turns"] == turns
    assert queues["worker-voice"] == voice | {"default"}
    # The worker metrics port the healthcheck asks is the one the worker serves.
    for name in WORKER_SERVICES:
        port = services[name]["environment"]["METRICS_WORKER_PORT"]
        assert probe_url(services[name]) == f"http://127.0.0.1:{port}/metrics"
        assert "/tmp/prometheus" in services[name]["tmpfs"]
        assert services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus"


def test_compose_workers_get_to_finish_their_tasks_when_stopped(compose):
    # docker stop: SIGTERM, then SIGKILL after the grace period. A warm shutdown waits for
    # the running tasks (up to the hard time limit); a kill leaves them to the visibility
    # timeout, which the settings keep above that limit.
    for name in WORKER_SERVICES:
        grace = compose["services"][name]["stop_grace_period"]
        assert seconds(grace) > settings.CELERY_TASK_TIME_LIMIT, name
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] == (
        settings.CELERY_VISIBILITY_TIMEOUT_SECONDS
    )
    assert settings.CELERY_VISIBILITY_TIMEOUT_SECONDS > settings.CELERY_TASK_TIME_LIMIT
    assert settings.CELERY_TASK_ACKS_LATE and settings.CELERY_TASK_REJECT_ON_WORKER_LOST
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1


def test_settings_refuse_a_visibility_timeout_within_the_time_limit():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "rpgai.settings",
            "CELERY_TASK_TIME_LIMIT": "150",
            "CELERY_VISIBILITY_TIMEOUT_SECONDS": "150",
        },
    )
    assert result.returncode != 0
    assert "CELERY_VISIBILITY_TIMEOUT_SECONDS (150) must be greater" in result.stderr


def test_compose_healthchecks_ask_urls_the_app_serves(compose):
    services = compose["services"]
    for name in WEB_SERVICES:
        url = probe_url(services[name])
        assert url == "http://127.0.0.1:8000/readyz"
        resolve(url.split("8000", 1)[1])  # raises Resolver404 for a path the app does not serve
        hosts = with_defaults(services[name]["environment"]["ALLOWED_HOSTS"]).split(",")
        assert "127.0.0.1" in hosts, "the healthcheck's Host must stay allowed"
    nginx_probe = probe_url(services["nginx"])
    assert nginx_probe == "http://127.0.0.1/healthz"
    resolve("/healthz")


def test_compose_commands_would_fail_for_missing_code():
    # The check itself must be able to fail, or the test above proves nothing.
    for command in (
        ["daphne", "rpgai.asgi:no_such_app"],
        ["daphne", "--no-such-option", "rpgai.asgi:application"],
        ["python", "manage.py", "no_such_command"],
        ["celery", "-A", "rpgai", "worker", "-Q", "default,no_such_queue"],
        ["celery", "-A", "rpgai", "worker", "-Q", "default", "--no-such-option=1"],
    ):
        with pytest.raises(AssertionError):
            assert_command_exists(command)


def test_compose_declares_its_volumes_and_shares_media_with_the_voice_worker(compose):
    services = compose["services"]
    declared = set(compose["volumes"])
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"
            else:
                assert source in declared, f"{name} uses the undeclared volume {source}"
    media_root = f"{APP_DIR}/{Path(settings.MEDIA_ROOT).relative_to(settings.BASE_DIR)}"
    assert settings.STORAGES[settings.VOICE_STORAGE_ALIAS]["BACKEND"].endswith("FileSystemStorage")
    for name in (*WEB_SERVICES, "worker-voice"):
        assert f"media:{media_root}" in services[name]["volumes"], name
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]


# --- docs/deploy.md: the Kubernetes manifests ----------------------------------------------


def deploy_manifests() -> list[dict[str, Any]]:
    text = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert blocks, "docs/deploy.md has no manifests"
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


def test_deploy_guide_manifests_use_real_commands_settings_and_probes():
    manifests = deploy_manifests()
    kinds = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    for expected in [
        ("Deployment", "rpgai-web"),
        ("Deployment", "rpgai-worker-turns"),
        ("Deployment", "rpgai-worker-voice"),
        ("Service", "rpgai-web"),
        ("Ingress", "rpgai"),
        ("HorizontalPodAutoscaler", "rpgai-web"),
        ("PodDisruptionBudget", "rpgai-web"),
        ("PersistentVolumeClaim", "rpgai-media"),
    ]:
        assert expected in kinds, f"docs/deploy.md lost its {expected}"
    assert any(m["kind"] == "Job" for m in manifests)
    known = settings_variables() | set(LIBRARY_VARIABLES)
    for manifest in manifests:
        if manifest["kind"] in ("Secret", "ConfigMap"):
            values = manifest.get("stringData") or manifest.get("data")
            assert not set(values) - known, f"{manifest['metadata']['name']}: unknown variables"
    pvc = next(m for m in manifests if m["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]

    queues: set[str] = set()
    media_root = f"{APP_DIR}/{Path(settings.MEDIA_ROOT).relative_to(settings.BASE_DIR)}"
    for manifest in manifests:
        if manifest["kind"] not in ("Deployment", "Job"):
            continue
        pod = manifest["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            assert_command_exists(container["command"])
            assert not {e["name"] for e in container.get("env", [])} - known
            if container["command"][0] == "celery":
                queues |= worker_queues(container["command"])
                grace = pod["terminationGracePeriodSeconds"]
                assert grace > settings.CELERY_TASK_TIME_LIMIT
            if container["command"][0] == "daphne":
                ready, alive = container["readinessProbe"], container["livenessProbe"]
                assert ready["httpGet"]["path"] == "/readyz"
                assert alive["httpGet"]["path"] == "/healthz"
                for probe in (ready, alive):
                    resolve(probe["httpGet"]["path"])
                    assert probe["httpGet"]["httpHeaders"][0]["name"] == "Host"
                    assert probe["timeoutSeconds"] > settings.HEALTH_CHECK_TIMEOUT_SECONDS
            if "-Q" in container["command"] and "voice" in worker_queues(container["command"]):
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert media_root in mounts, "the voice worker must write to the shared media"
    assert queues >= known_queues(), "no Deployment consumes some queue"


# --- deploy/nginx.conf ----------------------------------------------------------------------


def test_nginx_upstream_is_the_two_web_services_on_their_port(compose, nginx):
    http = one(nginx, "http")[2]
    upstreams = {d[1][0]: d[2] for d in directives(http, "upstream")}
    [server] = directives(http, "server")
    passes = {
        d[1][0]
        for location in directives(server[2], "location")
        for d in location[2] or []
        if d[0] == "proxy_pass"
    }
    assert passes, "nginx proxies nothing"
    for target in passes:
        name = target.removeprefix("http://")
        assert name in upstreams, f"proxy_pass {target}: no upstream {name!r}"
    servers = {d[1][0] for name in upstreams for d in directives(upstreams[name], "server")}
    expected = set()
    for name in WEB_SERVICES:
        command = compose["services"][name]["command"]
        port = CommandLineInterface().parser.parse_args(command[1:]).port
        assert str(port) in compose["services"][name]["expose"]
        expected.add(f"{name}:{port}")
    assert servers == expected
    listen = one(server[2], "listen")[1][0]
    assert compose["services"]["nginx"]["ports"][0].split(":")[-1] == listen


def test_nginx_passes_websockets_client_address_and_request_id(nginx):
    http = one(nginx, "http")[2]
    [server] = directives(http, "server")
    common = headers(server[2])
    assert common["x-forwarded-for"] == "$remote_addr", (
        "daphne --proxy-headers trusts the first address: nginx must overwrite the header"
    )
    assert common["x-forwarded-proto"] == "$scheme"
    request_id = common["x-request-id"]
    assert request_id == "$request_id" or any(
        d[1][:2] == ["$http_x_request_id", request_id] for d in directives(http, "map")
    ), "X-Request-ID is neither passed through nor set from $request_id"
    assert one(server[2], "proxy_http_version")[1] == ["1.1"]

    ws_prefix = "/" + str(websocket_urlpatterns[0].pattern).split("/")[0] + "/"
    ws = one(server[2], "location", ws_prefix)[2]
    upgrade = {**common, **headers(ws)}
    assert upgrade["upgrade"] == "$http_upgrade"
    connection = upgrade["connection"]
    assert connection.lower() == "upgrade" or any(
        d[1][:2] == ["$http_upgrade", connection] for d in directives(http, "map")
    )
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        assert seconds(one(ws, timeout)[1][0]) >= 3600, f"{timeout}: room sockets live long"


def test_nginx_hides_metrics_and_media_and_lets_the_app_answer_big_bodies(nginx):
    http = one(nginx, "http")[2]
    [server] = directives(http, "server")
    for path in ("/metrics", "/media/"):
        location = [d for d in directives(server[2], "location") if d[1][-1] == path]
        assert location, f"nginx has no location for {path}"
        body = location[0][2]
        assert not directives(body, "proxy_pass") and not directives(body, "alias")
        assert directives(body, "return") or directives(body, "deny")
    # Audio goes through the membership-checked API, which nginx proxies under /.
    assert (
        resolve(
            f"/api/campaigns/{'0' * 8}-0000-0000-0000-{'0' * 12}/audio/"
            f"{'0' * 8}-0000-0000-0000-{'0' * 12}"
        ).url_name
        == "api-speech-audio"
    )
    # Static files: whitenoise in the app, from the files collected into the image.
    assert "whitenoise.middleware.WhiteNoiseMiddleware" in settings.MIDDLEWARE
    assert not [d for d in directives(server[2], "location") if "static" in d[1][-1]]
    size = one(server[2], "client_max_body_size")[1][0]
    assert int(size.rstrip("mM")) * 1024 * 1024 > settings.MAX_REQUEST_BODY_BYTES


def test_nginx_parser_sees_what_is_wrong():
    with pytest.raises(AssertionError):
        nginx_parse("http { server { listen 80; }")
    parsed = nginx_parse('a b "c d"; # x;\nblock { inner 1; }')
    assert parsed == [("a", ["b", "c d"], None), ("block", [], [("inner", ["1"], None)])]


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_configuration(tmp_path):
    # nginx resolves the upstream names when it loads: point them at this machine.
    # The image's `nginx` user may not exist here: run as this machine's default.
    text = (ROOT / "deploy" / "nginx.conf").read_text().replace("user nginx;", "")
    for name in WEB_SERVICES:
        text = text.replace(f"server {name}:", "server 127.0.0.1:")
    (tmp_path / "nginx.conf").write_text(text)
    result = subprocess.run(
        [
            "nginx",
            "-t",
            "-p",
            str(tmp_path),
            "-c",
            str(tmp_path / "nginx.conf"),
            "-g",
            f"pid {tmp_path}/nginx.pid;",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_builds_a_pinned_non_root_image():
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    text = "\n".join(lines)
    assert lines[0] == "FROM python:3.11-slim"
    assert "pip install -c constraints.txt ." in text
    assert "manage.py collectstatic --noinput" in text
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the container must not run as root"
    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert cmd is not None
    assert_command_exists(yaml.safe_load(cmd.group(1)))

    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env"} <= set(ignored)
    assert any(p.startswith("db.sqlite3") for p in ignored)


# --- Makefile and .ci/run -------------------------------------------------------------------


def make_dry_run(folder: Path, *args: str) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAKE")},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def set_mtime(path: Path, when: float) -> None:
    os.utime(path, (when, when))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_installs_only_when_needed_then_lints_checks_and_tests(scratch):
    fresh = make_dry_run(scratch, "test")
    assert "-m venv .venv" in fresh
    assert "pip install" in fresh and "-c constraints.txt -e '.[dev]'" in fresh
    for step in (
        "ruff check .",
        "ruff format --check .",
        "manage.py makemigrations --check --dry-run",
        "-m pytest",
    ):
        assert step in fresh, f"make test does not run {step!r}"

    (scratch / ".venv" / "bin").mkdir(parents=True)
    (scratch / ".venv" / "bin" / "python").touch()
    (scratch / ".venv" / ".installed").touch()
    base = (scratch / "Makefile").stat().st_mtime
    for name in ("pyproject.toml", "constraints.txt"):
        set_mtime(scratch / name, base - 100)
    set_mtime(scratch / ".venv" / ".installed", base)
    installed = make_dry_run(scratch, "test")
    assert "-m venv" not in installed and "pip install" not in installed
    assert "-m pytest" in installed

    set_mtime(scratch / "constraints.txt", base + 100)
    changed = make_dry_run(scratch, "test")
    assert "-m venv" not in changed
    assert "-c constraints.txt -e '.[dev]'" in changed


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_migrates_seeds_and_serves_on_the_chosen_port(scratch):
    out = make_dry_run(scratch, "run", "PORT=8102")
    migrate, seed = out.index("manage.py migrate"), out.index("manage.py seed_demo")
    serve = out.index("daphne -b 127.0.0.1 -p 8102 ")
    assert migrate < seed < serve
    serve_line = out[serve:].splitlines()[0]
    assert "--websocket-max-message-size" in serve_line and serve_line.endswith(
        "rpgai.asgi:application"
    )
    for line in out.splitlines():
        words = line.split()
        if len(words) > 2 and words[1] == "manage.py":
            assert_command_exists(["python", *words[1:]])
    assert_command_exists(["daphne", "rpgai.asgi:application"])


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_worker_listens_on_every_routed_queue(scratch):
    """`make worker` starts a turns worker (threads pool: turns wait on an event loop, not a
    thread each) and a worker of its own for speech and memory (CPU work); together they
    take every routed queue."""
    dry_run = make_dry_run(scratch, "worker")
    # Each `<venv>/bin/celery ... worker ...` up to the `&` that puts it in the background.
    lines = re.findall(r"(\S*/bin/celery [^&;]*worker[^&;]*)&", dry_run)
    commands = [line.split() for line in lines]
    assert len(commands) == 2, dry_run
    queues: dict[str, list[str]] = {}
    for command in commands:
        command[0] = "celery"  # .venv/bin/celery
        assert_command_exists(command)
        for queue in worker_queues(command):
            queues.setdefault(queue, []).append(command[command.index("-P") + 1])
    assert set(queues) >= known_queues(), "make worker misses a queue"
    assert queues["turns"] == ["threads"] and queues["voice"] == queues["default"] == ["prefork"]


def test_ci_runs_make_test_then_the_suite_on_the_services():
    script = (ROOT / ".ci" / "run").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")]).returncode == 0
    assert "set -euo pipefail" in script
    assert "make test" in script
    assert "DATABASE_URL=" in script and "postgres://postgres@127.0.0.1:5432/test" in script
    assert "REDIS_URL=" in script and "redis://127.0.0.1:6379/0" in script
    assert script.index("make test") < script.index("pg_isready")
