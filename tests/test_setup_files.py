"""The set-up files agree with the code: docker-compose.yml, Dockerfile, Makefile, .ci/run.

Docker is not available where the tests run, so the compose file is checked by reading
it: its services, that every variable it sets is one the settings read, and that every
command names a module, app or management command that exists. The Makefile is checked
with `make -n` (prints the recipes without running them) in a scratch folder.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import environ
import pytest
import yaml
from celery import Celery
from django.conf import settings
from django.core.management import get_commands
from django.urls import resolve

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "web", "worker")
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


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def settings_variables() -> set[str]:
    """Every environment variable name that rpgai/settings.py reads."""
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


def assert_command_exists(command: list[str]) -> None:
    """The program of a container command and what it names exist in this code base."""
    program = command[0]
    if program == "daphne":
        module, _, attribute = command[-1].partition(":")
        assert attribute, f"daphne needs module:attribute, got {command[-1]!r}"
        assert getattr(importlib.import_module(module), attribute, None) is not None, command
    elif program == "celery":
        module = command[command.index("-A") + 1]
        apps = [v for v in vars(importlib.import_module(module)).values() if isinstance(v, Celery)]
        assert apps, f"`celery -A {module}`: {module} has no Celery app"
        if "worker" in command:
            queues = set(command[command.index("-Q") + 1].split(","))
            routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
            expected = routed | {settings.CELERY_TASK_DEFAULT_QUEUE}
            assert expected <= queues, f"the worker misses the queues {expected - queues}"
    elif program == "python" and command[1] == "manage.py":
        assert command[2] in get_commands(), f"no management command {command[2]!r}"
    else:
        pytest.fail(f"unknown container command {command!r}: teach this test what it runs")


# --- docker-compose.yml --------------------------------------------------------------------


def test_compose_has_every_service_with_healthchecks_and_ordered_start(compose):
    services = compose["services"]
    assert set(services) >= {"postgres", "redis", *APP_SERVICES}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"

    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("web", "worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert "8000" in services["web"]["ports"][0].split(":")[-1]


def test_compose_sets_only_variables_that_the_settings_read(compose):
    known = settings_variables()
    assert known >= CONTRACT_VARIABLES, "the settings stopped reading a CONTRACTS §5 variable"
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        unknown = set(environment) - known
        assert not unknown, f"{name} sets variables rpgai/settings.py never reads: {unknown}"
        assert set(environment) >= CONTRACT_VARIABLES, name
        assert environment["DEBUG"] == "0"


def test_compose_never_ships_a_default_secret(compose):
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        for secret in SECRETS:
            assert re.fullmatch(rf"\$\{{{secret}:\?[^}}]+\}}", environment[secret]), (
                f"{name}: {secret} must be required from the environment, not defaulted"
            )


def test_compose_urls_point_at_its_own_services(compose):
    environment = compose["services"]["web"]["environment"]
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


def test_compose_web_healthcheck_asks_a_url_the_app_serves(compose):
    web = compose["services"]["web"]
    probe = " ".join(web["healthcheck"]["test"])
    match = re.search(r"http://127\.0\.0\.1:8000(/[\w/-]*)", probe)
    assert match, f"the web healthcheck asks no URL of the server: {probe!r}"
    resolve(match.group(1))  # raises Resolver404 for a path the app does not serve
    hosts = with_defaults(web["environment"]["ALLOWED_HOSTS"]).split(",")
    assert "127.0.0.1" in hosts, "the healthcheck's Host must stay allowed"


def test_compose_commands_would_fail_for_missing_code():
    # The check itself must be able to fail, or the test above proves nothing.
    for command in (
        ["daphne", "rpgai.asgi:no_such_app"],
        ["python", "manage.py", "no_such_command"],
        ["celery", "-A", "rpgai", "worker", "-Q", "default"],
    ):
        with pytest.raises(AssertionError):
            assert_command_exists(command)


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
    line = next(line for line in make_dry_run(scratch, "worker").splitlines() if "celery" in line)
    command = line.split()
    command[0] = "celery"  # .venv/bin/celery
    assert_command_exists(command)


def test_ci_runs_make_test_then_the_suite_on_the_services():
    script = (ROOT / ".ci" / "run").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")]).returncode == 0
    assert "set -euo pipefail" in script
    assert "make test" in script
    assert "DATABASE_URL=" in script and "postgres://postgres@127.0.0.1:5432/test" in script
    assert "REDIS_URL=" in script and "redis://127.0.0.1:6379/0" in script
    assert script.index("make test") < script.index("pg_isready")
