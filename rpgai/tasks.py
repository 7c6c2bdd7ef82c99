"""Queue background work: on Celery when a broker is configured, else in-process.

Embedded (no REDIS_URL), a task runs as an asyncio task on the server's own event loop,
its sync body in a worker thread (`sync_to_async(thread_sensitive=False)`): the loop
never blocks, and code inside the task that talks to the in-memory channel layer
(`async_to_sync(group_send)`) reaches the loop that owns it. Called where no event loop
runs (a management command, a plain test), the task runs inline before returning.

The enqueuer's request id and trace context go with the task: in the Celery message's
headers (`request_id`, `traceparent`), or into the in-process task's thread. Either way
the task runs in a span `task <name>`, a child of the enqueuer's (rpgai/tracing.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from asgiref.sync import SyncToAsync, sync_to_async
from celery import Task
from django.conf import settings
from django.db import close_old_connections

from rpgai import tracing
from rpgai.request_id import celery_headers, get_request_id, request_id_bound

log = logging.getLogger(__name__)

_pending: set[asyncio.Future[Any]] = set()


def _main_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop that owns this thread's `sync_to_async` call, if any.

    None inside `rpgai.aio.run_sync` (a sync caller running a coroutine): the loop there
    is the call's own short-lived one, which cancels whatever is left on it when the
    call returns, so a task queued on it could be lost; it runs inline instead."""
    from rpgai.aio import in_sync_caller

    if in_sync_caller():
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    # asgiref records the calling loop on threads it runs sync code in.
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    pid = getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None)
    if loop is not None and pid == os.getpid() and loop.is_running():
        return loop
    return None


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop in-process work is scheduled on (the server's), or None where no
    loop runs (a management command, a plain test)."""
    return _main_loop()


def track(future: asyncio.Future[Any]) -> None:
    """Count a future started on the server's loop as in-process work: `wait_idle`
    waits for it too."""
    _pending.add(future)
    future.add_done_callback(_pending.discard)


def call_async(func: Callable[..., Any], *args: Any, timeout: float = 10.0) -> Any:
    """Call a coroutine function from sync code and wait (at most `timeout` seconds).

    In a thread that serves the server's event loop (embedded tasks, sync views) the
    coroutine runs on that loop, which owns the in-memory channel layer. Once that loop
    has stopped (the server is shutting down) nothing can run there: raise at once
    instead of waiting forever, which would keep the process from exiting. Elsewhere (a
    Celery worker, the turns' database threads, a command) it runs on this process's
    bridge loop (`_bridge_loop`).
    """
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    pid = getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None)
    # A closed loop is a stale record: asgiref leaves the short-lived loop of an
    # `async_to_sync` call recorded on the thread that served it.
    if loop is None or pid != os.getpid() or loop.is_closed():
        return asyncio.run_coroutine_threadsafe(func(*args), _bridge_loop()).result(timeout)
    if not loop.is_running():
        raise RuntimeError("the server's event loop has stopped")
    return asyncio.run_coroutine_threadsafe(func(*args), loop).result(timeout)


_bridge: tuple[int, asyncio.AbstractEventLoop] | None = None
_bridge_lock = threading.Lock()


def _bridge_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process, on a daemon thread of its own, for sync code that has no
    server loop to reach. The Redis channel layers keep their connections per event loop:
    asgiref's `async_to_sync` made a new loop (and thread, and Redis connection) for
    every broadcast, about half the wall time of an append in a worker (issue 21)."""
    global _bridge
    with _bridge_lock:
        if _bridge is None or _bridge[0] != os.getpid() or _bridge[1].is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="rpgai-layer-bridge", daemon=True
            )
            thread.start()
            _bridge = (os.getpid(), loop)
        return _bridge[1]


def _message_headers() -> dict[str, Any]:
    """A task message's headers: the current request id and trace context."""
    return tracing.inject_headers(celery_headers())


def _task_name(func: Callable[..., Any]) -> str:
    """`orchestrator.tasks.run_turn` for `run_turn.run`: Celery's name for it."""
    name = getattr(func, "__name__", None) or type(func).__name__
    module = getattr(func, "__module__", None)
    return f"{module}.{name}" if module else name


def _run_inline(func: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    try:
        name = _task_name(func)
        with tracing.span(f"task {name}", task=name, campaign_id=kwargs.get("campaign_id")):
            func(**kwargs)
    except Exception:
        log.exception("background task %s failed", getattr(func, "__name__", func))


def _run_in_thread(
    func: Callable[..., Any],
    kwargs: dict[str, Any],
    request_id: str = "",
    trace_headers: dict[str, Any] | None = None,
) -> None:
    # A worker thread of its own: its connection must not outlive the task.
    close_old_connections()
    try:
        # The enqueuer's request id and trace follow the task (log lines, events it
        # appends, spans). A timer thread starts with an empty context: they are passed.
        with request_id_bound(request_id), tracing.context_from(trace_headers):
            _run_inline(func, kwargs)
    finally:
        close_old_connections()


def enqueue(task: Task, **kwargs: Any) -> None:
    """Run `task` with keyword arguments in the background."""
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        # The worker's task_prerun handlers make these the task's request id and the
        # parent of its span.
        task.apply_async(kwargs=kwargs, headers=_message_headers())
        return
    loop = _main_loop()
    if loop is None:
        _run_inline(task.run, kwargs)
        return

    request_id = get_request_id()
    trace_headers = tracing.inject_headers({})

    def _spawn() -> None:
        fut = asyncio.ensure_future(
            sync_to_async(_run_in_thread, thread_sensitive=False)(
                task.run, kwargs, request_id, trace_headers
            )
        )
        _pending.add(fut)
        fut.add_done_callback(_pending.discard)

    loop.call_soon_threadsafe(_spawn)


def enqueue_later(task: Task, delay: float, **kwargs: Any) -> None:
    """Run `task` in the background after `delay` seconds (a Celery countdown; embedded, a
    timer on the server's event loop, or a daemon thread where no loop runs). At most
    once, not persisted: a restart forgets an embedded timer, so the task must be safe
    to run late, early or twice (a turn re-checks whether it is owed)."""
    delay = max(0.0, float(delay))
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        task.apply_async(kwargs=kwargs, countdown=delay, headers=_message_headers())
        return
    loop = _main_loop()
    if loop is None:
        timer = threading.Timer(
            delay,
            _run_in_thread,
            (task.run, kwargs, get_request_id(), tracing.inject_headers({})),
        )
        timer.daemon = True
        timer.start()
        return

    def _arm() -> None:
        loop.call_later(delay, functools.partial(enqueue, task, **kwargs))

    loop.call_soon_threadsafe(_arm)


async def wait_idle(timeout: float = 10.0) -> None:
    """Wait until no in-process task is pending (tests and benchmarks)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await asyncio.sleep(0)
        if not _pending:
            # A finishing task may queue another through call_soon_threadsafe.
            await asyncio.sleep(0.01)
            if not _pending:
                return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{len(_pending)} background tasks still running")
        await asyncio.wait(list(_pending), timeout=0.05)
