"""HTTP through the whole ASGI application (daphne's path: the body limit, then Django),
with the body sent in chunks, as a client without Content-Length may."""

from __future__ import annotations

from asgiref.testing import ApplicationCommunicator

from rpgai.asgi import application


async def asgi_request(
    path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[int, dict[bytes, bytes], bytes]:
    """A POST through the whole ASGI stack, in `chunks`."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    app = ApplicationCommunicator(application, scope)
    for n, chunk in enumerate(chunks):
        await app.send_input(
            {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
        )
    start = await app.receive_output(20)
    body = b""
    while True:
        message = await app.receive_output(20)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await app.wait(5)
    return start["status"], {k.lower(): v for k, v in start["headers"]}, body
