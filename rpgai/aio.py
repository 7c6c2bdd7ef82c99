"""Database work from coroutines, in a few threads, and coroutines from sync code.

A turn waiting on its model is a coroutine (orchestrator/turns, llm/): it holds no
thread, process or database connection while it waits. Its database work (the ORM is
sync) goes through `db()`, which runs it on a small pool of threads of its own
(`DB_THREADS`, default 4): however many turns are in flight, a process opens at most that
many connections for them. Each call starts and ends by closing connections that are
broken or past CONN_MAX_AGE, as Django does around a request, so a database restart
costs one failed call, not a dead thread.

Sync code (a management command, a plain test, a Celery task of the default queue)
calls a coroutine with `run_sync()`: the coroutine's database work then runs on the
caller's own thread and connection (its transaction, in a test), as Django's
`async_to_sync` / `sync_to_async(thread_sensitive=True)` pair does for views.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import SyncToAsync, async_to_sync, sync_to_async
from django.conf import settings
from django.db import close_old_connections

T = TypeVar("T")

# True inside run_sync(): database work stays on the calling thread.
_on_caller_thread: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "rpgai_db_on_caller_thread", default=False
)
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(
            max_workers=max(1, settings.DB_THREADS), thread_name_prefix="rpgai-db"
        )
    return _executor


def _in_pool(func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    close_old_connections()
    try:
        return func(*args, **kwargs)
    finally:
        close_old_connections()


def in_sync_caller() -> bool:
    """True in code run by `run_sync` (its database work included): there is no event
    loop of this process's own to schedule on, only the caller's thread."""
    return _on_caller_thread.get()


async def db(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run sync (database) code from a coroutine without blocking its event loop."""
    if _on_caller_thread.get():
        return await sync_to_async(func, thread_sensitive=True)(*args, **kwargs)
    return await sync_to_async(_in_pool, thread_sensitive=False, executor=_pool())(
        func, args, kwargs
    )


def run_sync(coroutine_function: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """A sync function calling `coroutine_function`, for sync callers."""

    @functools.wraps(coroutine_function)
    def call(*args: Any, **kwargs: Any) -> T:
        async def inner() -> T:
            token = _on_caller_thread.set(True)
            try:
                return await coroutine_function(*args, **kwargs)
            finally:
                _on_caller_thread.reset(token)

        # asgiref leaves its loop recorded on this thread (SyncToAsync.threadlocal); that
        # loop is gone once the call returns: forget it, as it was before.
        local = SyncToAsync.threadlocal
        previous = (
            getattr(local, "main_event_loop", None),
            getattr(local, "main_event_loop_pid", None),
        )
        try:
            return async_to_sync(inner)()
        finally:
            local.main_event_loop, local.main_event_loop_pid = previous

    return call
