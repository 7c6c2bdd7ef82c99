"""The Celery app, configured from the CELERY_* Django settings."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rpgai.settings")

app = Celery("rpgai")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# --- Operations: request ids, tracing, logging and metrics in workers (rpgai/request_id.py,
# rpgai/tracing.py, rpgai/logging.py, rpgai/metrics.py; docs/operations.md) ----------------


@signals.task_prerun.connect(weak=False)
def _bind_request_id(task_id=None, task=None, **kwargs):
    # The id the enqueuer put in the message headers (rpgai.tasks.enqueue), or a new one.
    from rpgai.request_id import celery_task_prerun

    celery_task_prerun(task_id=task_id, task=task, **kwargs)


@signals.task_postrun.connect(weak=False)
def _unbind_request_id(task_id=None, **kwargs):
    from rpgai.request_id import celery_task_postrun

    celery_task_postrun(task_id=task_id, **kwargs)


# --- Tracing (rpgai/tracing.py): the enqueuer's trace continues in the task --------------------


@signals.celeryd_init.connect(weak=False)
def _name_the_worker_service(**kwargs):
    # Sent as the worker starts, before Django is set up (OpsConfig.ready configures
    # tracing): this process's spans belong to rpgai-worker unless OTEL_SERVICE_NAME says.
    from rpgai.tracing import worker_starting

    worker_starting()


@signals.task_prerun.connect(weak=False)
def _open_task_span(task_id=None, task=None, **kwargs):
    # Connected after _bind_request_id: the task's span carries the task's request id.
    from rpgai.tracing import celery_task_prerun

    celery_task_prerun(task_id=task_id, task=task, **kwargs)


@signals.task_postrun.connect(weak=False)
def _close_task_span(task_id=None, **kwargs):
    from rpgai.tracing import celery_task_postrun

    celery_task_postrun(task_id=task_id, **kwargs)


@signals.worker_process_shutdown.connect(weak=False)
def _flush_spans(**kwargs):
    # A pool process may exit before the batch exporter's next round: send what waits.
    from rpgai.tracing import flush

    flush()


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
