"""Database work from coroutines, in a few threads, and coroutines from sync code.

A turn waiting on its model is a coroutine (orchestrator/turns, llm/): it holds no
thread, process or database connection while it waits. Its database work (the ORM is
sync) goes through `db()`, which runs it on a small pool of threads of its own
(`DB_THREADS`, default 4): however many turns are in flight, a process opens at most
that many connections for them, and keeps them open. Each call starts and ends by closing a
connection that broke, as Django does around a request, so a database restart costs one
failed call, not a dead thread.

Sync code (a management command, a plain test, a Celery task of the default queue)
calls a coroutine with `run_sync()`: the coroutine's database work then runs on the
caller's own thread and connection (its transaction, in a test), as Django's
`async_to_sync` / `sync_to_async(thread_sensitive=True)` pair does for views.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import SyncToAsync, async_to_sync, sync_to_async
from django.conf import settings
from django.db import connections

T = TypeVar("T")

# True inside run_sync(): database work stays on the calling thread.
_on_caller_thread: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "rpgai_db_on_caller_thread", default=False
)
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=max(1, settings.DB_THREADS), thread_name_prefix="rpgai-db"
            )
            _executor.rpgai_size = max(1, settings.DB_THREADS)  # type: ignore[attr-defined]
        return _executor


def db_threads_stop() -> None:
    """Close the database threads' connections and stop the threads (the next `db` call
    starts new ones): for tests, before their database is dropped."""
    global _executor
    with _executor_lock:
        executor, _executor = _executor, None
    if executor is None:
        return
    size = executor.rpgai_size  # type: ignore[attr-defined]
    # Each task waits for the others, so every thread takes exactly one and closes its
    # own connections.
    barrier = threading.Barrier(size)
    for future in [executor.submit(_close_and_wait, barrier) for _ in range(size)]:
        future.result(timeout=30)
    executor.shutdown(wait=True)


def _close_and_wait(barrier: threading.Barrier) -> None:
    connections.close_all()
    barrier.wait(timeout=10)


def _tidy_connections() -> None:
    """Keep this thread's connections open (a pool thread's connection is one of at most
    DB_THREADS; opening one per call cost more than the call), but drop one that broke
    (a database restart) or was left in a transaction, as Django does between requests."""
    for connection in connections.all(initialized_only=True):
        connection.close_at = None
        connection.close_if_unusable_or_obsolete()


def _in_pool(func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    _tidy_connections()
    try:
        return func(*args, **kwargs)
    finally:
        _tidy_connections()


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


_io_executor: ThreadPoolExecutor | None = None


def _io_pool() -> ThreadPoolExecutor:
    global _io_executor
    with _executor_lock:
        if _io_executor is None:
            _io_executor = ThreadPoolExecutor(
                max_workers=max(1, settings.IO_THREADS), thread_name_prefix="rpgai-io"
            )
        return _io_executor


async def io(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run sync cache (Redis) work from a coroutine on threads of its own (IO_THREADS),
    not the database's: a hundred turns streaming their narration write the text so far
    a few times a second each, and on the DB_THREADS those writes queued ahead of the
    database work of the turns starting (issue 17). Touches no database connection."""
    if _on_caller_thread.get():
        return func(*args, **kwargs)  # sync callers (a command, a test): their own thread
    return await asyncio.get_running_loop().run_in_executor(
        _io_pool(), functools.partial(func, *args, **kwargs)
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
