"""The Celery app, configured from the CELERY_* Django settings."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rpgai.settings")

app = Celery("rpgai")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# --- Operations: request ids, logging and metrics in workers (rpgai/request_id.py,
# rpgai/logging.py, rpgai/metrics.py; docs/operations.md) ---------------------------------


@signals.task_prerun.connect(weak=False)
def _bind_request_id(task_id=None, task=None, **kwargs):
    # The id the enqueuer put in the message headers (rpgai.tasks.enqueue), or a new one.
    from rpgai.request_id import celery_task_prerun

    celery_task_prerun(task_id=task_id, task=task, **kwargs)


@signals.task_postrun.connect(weak=False)
def _unbind_request_id(task_id=None, **kwargs):
    from rpgai.request_id import celery_task_postrun

    celery_task_postrun(task_id=task_id, **kwargs)


@signals.setup_logging.connect(weak=False)
def _use_django_logging(**kwargs):
    # Connected, this stops Celery from replacing the root logger's handlers: worker
    # lines go through our structlog formatter (JSON in production) like the web's.
    from django.conf import settings

    from rpgai.logging import configure

    configure(settings.LOGGING)


@signals.worker_ready.connect(weak=False)
def _serve_worker_metrics(**kwargs):
    # Turns and voice run in workers: their model calls, tokens and latencies are
    # recorded here, so a worker serves its own /metrics when METRICS_WORKER_PORT is set.
    from django.conf import settings
    from prometheus_client import start_http_server

    from rpgai.metrics import registry_for_scrape

    if settings.METRICS_WORKER_PORT:
        start_http_server(
            settings.METRICS_WORKER_PORT,
            addr=settings.METRICS_WORKER_ADDR,
            registry=registry_for_scrape(),
        )


@signals.worker_process_shutdown.connect(weak=False)
def _forget_dead_child(pid=None, **kwargs):
    from rpgai.metrics import process_dead

    process_dead(pid or os.getpid())
