# rpgai: every day-to-day command. `make run` and `make test` work from a fresh clone:
# they create .venv and install the pinned dependencies first (again only when
# pyproject.toml or constraints.txt changes).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PIP_VERSION := 26.3
HOST ?= 127.0.0.1
# daphne drops a WebSocket message or frame past 64 KiB itself (our own limit, 16 KiB, answers
# `too_large` below that): a bound on memory per connection.
DAPHNE_LIMITS ?= --websocket-max-message-size 65536 --websocket-max-frame-size 65536
PORT ?= 8000

# The workers `make worker` starts (tests/processes.py and bench/ start the same).
TURNS_WORKER = $(BIN)/celery -A rpgai worker -Q turns -P threads -c 8 -n turns@%h --loglevel=INFO
VOICE_WORKER = $(BIN)/celery -A rpgai worker -Q voice,default -P prefork -c 2 -n voice@%h --loglevel=INFO

.DEFAULT_GOAL := help
.PHONY: help install run test lint fmt migrations-check bench worker lock clean

help:
	@echo "make run      install, migrate, seed the demo campaign, serve http://$(HOST):$(PORT)"
	@echo "make test     install, lint, check migrations, run the whole test suite"
	@echo "make lint     ruff check and ruff format --check"
	@echo "make fmt      ruff format and ruff check --fix"
	@echo "make bench    run the benchmarks (bench/run.py)"
	@echo "make worker   the Celery workers: turns (threads) and voice+default (needs REDIS_URL)"
	@echo "make lock     regenerate constraints.txt from a fresh install of pyproject.toml"
	@echo "make clean    remove .venv, caches and collected static files (keeps db.sqlite3)"

# The venv itself: made only when missing.
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)

# (Re)install when the dependency files are newer than the stamp.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo --url http://$(HOST):$(PORT)/
	@echo "Serving on http://$(HOST):$(PORT) (Ctrl-C stops)"
	$(BIN)/daphne -b $(HOST) -p $(PORT) $(DAPHNE_LIMITS) rpgai.asgi:application

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(PY) bench/run.py

worker: $(STAMP)
	@if [ -z "$$REDIS_URL" ] && ! grep -qs '^REDIS_URL=.' .env; then \
		echo "make worker: set REDIS_URL (e.g. redis://127.0.0.1:6379/0); without it tasks run inside the web server" >&2; \
		exit 2; \
	fi
	@# Two workers, stopped together by Ctrl-C. Turns wait on the model without holding a
	@# thread (orchestrator/scheduler.py): a few threads take the tasks and hand them to
	@# the process's event loop. Speech and memory (summaries, NPC memory) are CPU work:
	@# processes of their own, so that they never stall a turn.
	@trap 'kill 0' INT TERM; \
	$(TURNS_WORKER) & \
	$(VOICE_WORKER) & \
	wait

# Pins every transitive dependency, resolved afresh in a throwaway venv.
lock:
	@set -e; tmp=$$(mktemp -d); \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION); \
	"$$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check '.[dev]'; \
	"$$tmp/venv/bin/python" -m pip freeze --exclude rpgai > constraints.txt; \
	rm -rf build; \
	rm -rf "$$tmp"; \
	echo "constraints.txt: $$(wc -l < constraints.txt) pinned packages"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis staticfiles build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
