"""The `openai` provider: the official SDK against OpenAI or any compatible server.

`OPENAI_BASE_URL` and `DM_MODEL` point it at OpenAI, vLLM, Ollama or llama.cpp's server.
`OPENAI_API_STYLE` picks the API: `chat` (Chat Completions, which most compatible servers
speak) or `responses`. `DM_OUTPUT_MODE` picks how the answer's shape is enforced (the
prompt always carries the schema too):

- `json_schema`: structured output (`response_format` `json_schema`);
- `json_object`: `response_format` `json_object` with the schema in its `schema` field
  (llama-cpp-python compiles it into a grammar), or without it where that is refused;
- `tool`: one forced function, `dm_turn`, whose arguments are the answer;
- `prompt`: no `response_format` at all: the schema in the prompt is all there is;
- `auto` (the default): the first of json_schema, json_object with schema, json_object,
  prompt that the server accepts. A refusal of the request shape (HTTP 400 or 422, or a
  5xx whose body names `response_format`, as llama-cpp-python answers `json_schema`) moves
  to the next shape at once and is never retried as if transient. What worked is kept per
  server, model and API in the Django cache (Redis: every process shares it) for
  `DM_OUTPUT_MODE_CACHE_SECONDS`, so the refused shape costs one request per server, not
  one per turn.

Either way the answer is the same JSON object, streamed. Reasoning (`reasoning_content`,
`reasoning`, Responses' reasoning items) is never read; `<think>` blocks in the content
are dropped by the stream's filter and by `answer_parse`.

Retries are ours, not the SDK's (it is built with `max_retries=0`): 429, 5xx and
connection failures are retried with exponential backoff (honouring `Retry-After`)
while the turn's deadline allows; 401, 403 and other 4xx are not; a timeout is not
either, since a server that hung once will keep the players waiting again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
import weakref
from typing import Any

import openai
from django.conf import settings
from django.core.cache import cache

from .adapters import AnswerFormat, ModelError, ModelReply, ModelRequest, StreamSink, Usage
from .tokens import count_message_tokens, count_tokens

log = logging.getLogger(__name__)

RETRY_AFTER_MAX_SECONDS = 30.0

# The request shapes, most structured first. "json_object+schema" is llama-cpp-python's
# {"type": "json_object", "schema": {...}}; "prompt" sends no response_format.
SHAPE_JSON_SCHEMA = "json_schema"
SHAPE_JSON_OBJECT_SCHEMA = "json_object+schema"
SHAPE_JSON_OBJECT = "json_object"
SHAPE_PROMPT = "prompt"
SHAPE_TOOL = "tool"
OUTPUT_MODES = ("auto", "json_schema", "json_object", "tool", "prompt")
_LADDERS: dict[str, tuple[str, ...]] = {
    "auto": (SHAPE_JSON_SCHEMA, SHAPE_JSON_OBJECT_SCHEMA, SHAPE_JSON_OBJECT, SHAPE_PROMPT),
    "json_schema": (SHAPE_JSON_SCHEMA,),
    "json_object": (SHAPE_JSON_OBJECT_SCHEMA, SHAPE_JSON_OBJECT),
    "tool": (SHAPE_TOOL,),
    "prompt": (SHAPE_PROMPT,),
}
_CACHE_PREFIX = "dm:output-shape:"

# One client (one connection pool) per event loop, server and key, shared by the turns
# of that loop: an async HTTP pool belongs to the loop it was opened on.
_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str | None, str], openai.AsyncOpenAI]
] = weakref.WeakKeyDictionary()


def _client(base_url: str | None, api_key: str) -> openai.AsyncOpenAI:
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (base_url, api_key)
    client = per_loop.get(key)
    if client is None:
        client = per_loop[key] = openai.AsyncOpenAI(
            # Local servers take no key, but the SDK insists on one.
            api_key=api_key or "no-key",
            base_url=base_url,
            # The SDK's pool: up to 1,000 connections, 100 kept alive.
            max_retries=0,
        )
    return client


class _Retry(Exception):
    def __init__(self, error: ModelError, retry_after: float | None) -> None:
        super().__init__(error.detail)
        self.error = error
        self.retry_after = retry_after


def _retry_after(exc: openai.APIStatusError) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return min(max(float(value), 0.0), RETRY_AFTER_MAX_SECONDS) if value is not None else None
    except (TypeError, ValueError):
        return None


def _classify(exc: Exception) -> ModelError | _Retry:
    """What a failed call means: a final ModelError, or a _Retry wrapping one."""
    if isinstance(exc, openai.APITimeoutError):
        return ModelError("the model did not answer in time", code="model_timeout")
    if isinstance(exc, openai.RateLimitError):
        return _Retry(
            ModelError("the model server is rate-limiting us (HTTP 429)", code="rate_limited"),
            _retry_after(exc),
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status >= 500 or status == 408:
            return _Retry(
                ModelError(f"the model server failed (HTTP {status})", code="model_error"),
                _retry_after(exc),
            )
        if status in (401, 403):
            return ModelError(
                f"the model server refused our credentials (HTTP {status}); check OPENAI_API_KEY",
                code="model_error",
            )
        return ModelError(
            f"the model server rejected the request (HTTP {status})", code="model_error"
        )
    if isinstance(exc, openai.APIConnectionError):
        return _Retry(ModelError("could not reach the model server", code="model_error"), None)
    return ModelError(f"the model call failed: {str(exc)[:200]}", code="model_error")


def _error_text(exc: openai.APIStatusError) -> str:
    try:
        return exc.response.text[:4000]
    except Exception:  # a streamed response whose body was not read
        return str(exc.body or exc.message)[:4000]


def _shape_refused(exc: Exception) -> bool:
    """Whether the server refused the request's shape rather than failed: 400 and 422 are
    about the request; llama-cpp-python answers a `response_format` it does not know with
    a 500 naming it. Retrying the same request would get the same answer."""
    if not isinstance(exc, openai.APIStatusError):
        return False
    if exc.status_code in (400, 422):
        return True
    return exc.status_code >= 500 and "response_format" in _error_text(exc)


def _shape_key(*, base_url: str | None, model: str, api_style: str, mode: str) -> str:
    server = base_url.rstrip("/") if base_url else "openai"
    digest = hashlib.sha256(f"{server}|{model}|{api_style}|{mode}".encode()).hexdigest()[:32]
    return _CACHE_PREFIX + digest


def output_shapes_forget(*, base_url: str | None, model: str) -> None:
    """Forget which request shape a server and model accept (after an upgrade, say): the
    next call tries the most structured shape again."""
    keys = [
        _shape_key(base_url=base_url, model=model, api_style=style, mode=mode)
        for style in ("chat", "responses")
        for mode in OUTPUT_MODES
    ]
    try:
        cache.delete_many(keys)
    except Exception:
        log.warning("could not clear the remembered output shapes", exc_info=True)


def _format(request: ModelRequest) -> AnswerFormat:
    if request.answer_format is None:  # only the prompt shape is used without one
        raise ModelError("no answer format for a structured request", code="model_error")
    return request.answer_format


def _tool_name(request: ModelRequest) -> str | None:
    return request.answer_format.tool_name if request.answer_format is not None else None


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """A field of an SDK object or a plain dict (compatible servers add or omit fields)."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    value = getattr(obj, name, default)
    return default if value is None else value


class OpenAIModel:
    provider = "openai"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        api_style: str | None = None,
        output_mode: str | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url if base_url is not None else settings.OPENAI_BASE_URL
        self.api_key = api_key if api_key is not None else settings.OPENAI_API_KEY
        self.api_style = api_style or settings.OPENAI_API_STYLE
        self.output_mode = output_mode or settings.DM_OUTPUT_MODE
        if self.api_style not in ("chat", "responses"):
            raise ModelError(f"OPENAI_API_STYLE must be chat or responses, not {self.api_style!r}")
        if self.output_mode not in OUTPUT_MODES:
            raise ModelError(
                f"DM_OUTPUT_MODE must be one of {', '.join(OUTPUT_MODES)}, not {self.output_mode!r}"
            )
        ladder = _LADDERS[self.output_mode]
        if self.api_style == "responses":
            # The Responses API's text.format has no `schema` field beside json_object.
            ladder = tuple(s for s in ladder if s != SHAPE_JSON_OBJECT_SCHEMA)
        self.ladder = ladder
        self._shape_key = _shape_key(
            base_url=self.base_url, model=model, api_style=self.api_style, mode=self.output_mode
        )

    # --- Which request shape -----------------------------------------------------------------

    def _ladder_for(self, request: ModelRequest) -> tuple[str, ...]:
        # A plain-text call (a summary) has no answer format to enforce.
        return self.ladder if request.answer_format is not None else (SHAPE_PROMPT,)

    async def _shape_first(self, ladder: tuple[str, ...]) -> int:
        """Where to start on the ladder: the shape that last worked for this server."""
        if len(ladder) == 1:
            return 0
        try:
            known = await cache.aget(self._shape_key)
        except Exception:  # the cache is a help, never a reason for a turn to fail
            log.warning("could not read the remembered output shape", exc_info=True)
            return 0
        return ladder.index(known) if known in ladder else 0

    async def _shape_remember(self, ladder: tuple[str, ...], shape: str) -> None:
        if len(ladder) == 1:
            return
        try:
            await cache.aset(self._shape_key, shape, timeout=settings.DM_OUTPUT_MODE_CACHE_SECONDS)
        except Exception:
            log.warning("could not remember the output shape", exc_info=True)

    # --- The interface -----------------------------------------------------------------------

    async def complete(self, request: ModelRequest) -> ModelReply:
        return await self._with_retries(request, None)

    async def stream(self, request: ModelRequest, sink: StreamSink) -> ModelReply:
        return await self._with_retries(request, sink)

    # --- Retries -----------------------------------------------------------------------------

    async def _with_retries(self, request: ModelRequest, sink: StreamSink | None) -> ModelReply:
        ladder = self._ladder_for(request)
        step = await self._shape_first(ladder)
        attempt = 0
        while True:
            attempt += 1
            shape = ladder[step]
            left = request.seconds_left()
            if left <= 0:
                raise ModelError(
                    "the turn ran out of time before the model answered", code="model_timeout"
                )
            timeout = openai.Timeout(
                min(float(settings.DM_TIMEOUT_SECONDS), left),
                connect=min(float(settings.DM_CONNECT_TIMEOUT_SECONDS), left),
            )
            if attempt > 1 and sink is not None:
                sink.restart()
            try:
                # The read timeout bounds only the silence between bytes: a server that
                # keeps the stream alive with pings while it thinks (llama-cpp-python's
                # SSE pings every 15 s) never trips it. The turn's deadline bounds the call.
                async with asyncio.timeout(left if request.deadline is not None else None):
                    reply = await self._once(request, sink, timeout, shape)
            except TimeoutError:
                raise ModelError("the model did not finish in time", code="model_timeout") from None
            except openai.OpenAIError as exc:
                if _shape_refused(exc):
                    if step + 1 < len(ladder):
                        log.warning(
                            "%s refused the %s request shape (HTTP %s); trying %s",
                            self.base_url or "OpenAI",
                            shape,
                            getattr(exc, "status_code", "?"),
                            ladder[step + 1],
                        )
                        step += 1
                        # Remembered now, whether or not the next shape is answered in
                        # time: the refusal is a fact about this server, and the next
                        # turn must not ask in the refused shape again.
                        await self._shape_remember(ladder, ladder[step])
                        attempt -= 1  # a refused shape is no failed attempt
                        continue
                    raise self._refusal_error(exc, shape) from None
                outcome = _classify(exc)
            else:
                reply.attempts = attempt
                reply.extra["output_shape"] = shape
                return reply
            if isinstance(outcome, ModelError):
                raise outcome
            if attempt > settings.DM_MAX_RETRIES:
                raise outcome.error
            backoff = settings.DM_RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1)
            wait = outcome.retry_after if outcome.retry_after is not None else backoff
            wait += random.uniform(0, backoff / 4) if wait else 0
            if request.seconds_left() < wait + 1:
                raise outcome.error
            log.warning(
                "model call failed (%s); retry %d in %.2fs", outcome.error.detail, attempt, wait
            )
            await asyncio.sleep(wait)

    def _refusal_error(self, exc: openai.OpenAIError, shape: str) -> ModelError:
        status = getattr(exc, "status_code", "?")
        text = _error_text(exc) if isinstance(exc, openai.APIStatusError) else ""
        if shape == SHAPE_PROMPT or not any(
            word in text for word in ("response_format", "json_schema", "json_object", "tool")
        ):
            # Nothing was left to drop, or the server refused something else (a prompt
            # past its context, say): the request itself is refused.
            return ModelError(
                f"the model server rejected the request (HTTP {status})", code="model_error"
            )
        log.warning(
            "%s refused DM_OUTPUT_MODE=%s (HTTP %s: %s); DM_OUTPUT_MODE=auto finds one it takes",
            self.base_url or "OpenAI",
            self.output_mode,
            status,
            text[:300],
        )
        return ModelError(
            f"the model server does not accept the requested answer format (HTTP {status})",
            code="model_error",
        )

    async def _once(
        self, request: ModelRequest, sink: StreamSink | None, timeout: Any, shape: str
    ) -> ModelReply:
        client = _client(self.base_url, self.api_key)
        if self.api_style == "chat":
            kwargs = self._chat_kwargs(request, shape)
            if sink is None:
                return self._chat_reply(
                    request, await client.chat.completions.create(**kwargs, timeout=timeout)
                )
            stream = await client.chat.completions.create(
                **kwargs, stream=True, stream_options={"include_usage": True}, timeout=timeout
            )
            return await self._chat_stream(request, stream, sink, shape)
        kwargs = self._responses_kwargs(request, shape)
        if sink is None:
            return self._responses_reply(
                request, await client.responses.create(**kwargs, timeout=timeout)
            )
        stream = await client.responses.create(**kwargs, stream=True, timeout=timeout)
        return await self._responses_stream(request, stream, sink, shape)

    # --- Chat Completions --------------------------------------------------------------------

    def _chat_kwargs(self, request: ModelRequest, shape: str) -> dict[str, Any]:
        fmt = _format(request)
        kwargs: dict[str, Any] = {"model": self.model, "messages": request.messages}
        # OpenAI's newer models take only max_completion_tokens; compatible servers know
        # max_tokens (and some only that).
        limit_name = "max_completion_tokens" if self.base_url is None else "max_tokens"
        kwargs[limit_name] = request.max_tokens
        if shape == SHAPE_TOOL:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": fmt.tool_name,
                        "description": fmt.tool_description,
                        "parameters": fmt.schema,
                    },
                }
            ]
            kwargs["tool_choice"] = {"type": "function", "function": {"name": fmt.tool_name}}
        elif shape == SHAPE_JSON_SCHEMA:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": fmt.name,
                    "schema": fmt.schema,
                    "strict": False,
                },
            }
        elif shape == SHAPE_JSON_OBJECT_SCHEMA:
            kwargs["response_format"] = {
                "type": "json_object",
                "schema": fmt.portable_schema,
            }
        elif shape == SHAPE_JSON_OBJECT:
            kwargs["response_format"] = {"type": "json_object"}
        return kwargs

    def _chat_reply(self, request: ModelRequest, response: Any) -> ModelReply:
        choices = _get(response, "choices", [])
        if not choices:
            raise ModelError("the model server sent no choices", code="model_error")
        message = _get(choices[0], "message")
        text = _get(message, "content", "") or ""
        for call in _get(message, "tool_calls", []) or []:
            function = _get(call, "function")
            if _get(function, "name") == _tool_name(request):
                text = _get(function, "arguments", "") or ""
                break
        usage = _get(response, "usage")
        return ModelReply(
            text=text,
            usage=self._usage(
                request, text, _get(usage, "prompt_tokens"), _get(usage, "completion_tokens")
            ),
            finish_reason=_get(choices[0], "finish_reason"),
        )

    async def _chat_stream(
        self, request: ModelRequest, stream: Any, sink: StreamSink, shape: str
    ) -> ModelReply:
        parts: list[str] = []
        tool_parts: list[str] = []
        tool_name = _tool_name(request)
        answer_index: int | None = None
        input_tokens = output_tokens = None
        finish_reason = None
        async with stream:
            async for chunk in stream:
                self._check_deadline(request)
                usage = _get(chunk, "usage")
                if usage is not None:
                    input_tokens = _get(usage, "prompt_tokens")
                    output_tokens = _get(usage, "completion_tokens")
                for choice in _get(chunk, "choices", []) or []:
                    finish_reason = _get(choice, "finish_reason", finish_reason)
                    delta = _get(choice, "delta")
                    # Reasoning arrives in its own fields (reasoning_content, reasoning)
                    # and is never read: it must not reach players.
                    content = _get(delta, "content")
                    if content and isinstance(content, str):
                        parts.append(content)
                        # A server that ignores the forced tool answers in the content:
                        # stream that until a tool call shows up.
                        if shape != SHAPE_TOOL or not tool_parts:
                            await sink.feed(content)
                    for call in _get(delta, "tool_calls", []) or []:
                        function = _get(call, "function")
                        index = _get(call, "index", 0)
                        if _get(function, "name") == tool_name and answer_index is None:
                            answer_index = index
                        arguments = _get(function, "arguments")
                        if arguments and index == (answer_index if answer_index is not None else 0):
                            tool_parts.append(arguments)
                            await sink.feed(arguments)
        text = "".join(tool_parts) if tool_parts else "".join(parts)
        return ModelReply(
            text=text,
            usage=self._usage(request, text, input_tokens, output_tokens),
            finish_reason=finish_reason,
        )

    # --- Responses ---------------------------------------------------------------------------

    def _responses_kwargs(self, request: ModelRequest, shape: str) -> dict[str, Any]:
        fmt = _format(request)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "input": [{"role": m["role"], "content": m["content"]} for m in request.messages],
            "max_output_tokens": request.max_tokens,
            "store": False,
        }
        if shape == SHAPE_TOOL:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "name": fmt.tool_name,
                    "description": fmt.tool_description,
                    "parameters": fmt.schema,
                    "strict": False,
                }
            ]
            kwargs["tool_choice"] = {"type": "function", "name": fmt.tool_name}
        elif shape == SHAPE_JSON_SCHEMA:
            kwargs["text"] = {
                "format": {
                    "type": "json_schema",
                    "name": fmt.name,
                    "schema": fmt.schema,
                    "strict": False,
                }
            }
        elif shape == SHAPE_JSON_OBJECT:
            kwargs["text"] = {"format": {"type": "json_object"}}
        return kwargs

    def _responses_text(self, response: Any, tool_name: str | None) -> str:
        texts: list[str] = []
        for item in _get(response, "output", []) or []:
            kind = _get(item, "type")
            if kind == "function_call" and _get(item, "name") == tool_name:
                return _get(item, "arguments", "") or ""
            if kind == "message":
                for part in _get(item, "content", []) or []:
                    if _get(part, "type") == "output_text":
                        texts.append(_get(part, "text", "") or "")
            # "reasoning" items are skipped: reasoning never reaches players.
        return "".join(texts)

    def _responses_reply(self, request: ModelRequest, response: Any) -> ModelReply:
        self._responses_check_status(response)
        text = self._responses_text(response, _tool_name(request))
        usage = _get(response, "usage")
        return ModelReply(
            text=text,
            usage=self._usage(
                request, text, _get(usage, "input_tokens"), _get(usage, "output_tokens")
            ),
            finish_reason=_get(response, "status"),
        )

    def _responses_check_status(self, response: Any) -> None:
        if _get(response, "status") == "failed":
            error = _get(response, "error")
            raise ModelError(
                f"the model failed: {_get(error, 'message', 'no reason given')}"[:300],
                code="model_error",
            )

    async def _responses_stream(
        self, request: ModelRequest, stream: Any, sink: StreamSink, shape: str
    ) -> ModelReply:
        parts: list[str] = []
        tool_parts: list[str] = []
        final: Any = None
        async with stream:
            async for event in stream:
                self._check_deadline(request)
                kind = _get(event, "type")
                if kind == "response.output_text.delta":
                    delta = _get(event, "delta", "")
                    parts.append(delta)
                    if shape != SHAPE_TOOL or not tool_parts:
                        await sink.feed(delta)
                elif kind == "response.function_call_arguments.delta":
                    delta = _get(event, "delta", "")
                    tool_parts.append(delta)
                    await sink.feed(delta)
                elif kind in ("response.completed", "response.incomplete", "response.failed"):
                    final = _get(event, "response")
                elif kind == "error":
                    raise ModelError(
                        f"the model server reported an error: {_get(event, 'message', '')}"[:300],
                        code="model_error",
                    )
        if final is not None:
            self._responses_check_status(final)
        text = "".join(tool_parts) if tool_parts else "".join(parts)
        if final is not None and not text:
            text = self._responses_text(final, _tool_name(request))
        usage = _get(final, "usage")
        return ModelReply(
            text=text,
            usage=self._usage(
                request, text, _get(usage, "input_tokens"), _get(usage, "output_tokens")
            ),
            finish_reason=_get(final, "status"),
        )

    # --- Helpers -----------------------------------------------------------------------------

    def _check_deadline(self, request: ModelRequest) -> None:
        # The read timeout only bounds the silence between chunks; a server that trickles
        # tokens forever is stopped by the turn's deadline.
        if request.deadline is not None and time.monotonic() > request.deadline:
            raise ModelError("the model did not finish in time", code="model_timeout")

    def _usage(
        self, request: ModelRequest, text: str, input_tokens: Any, output_tokens: Any
    ) -> Usage:
        estimated = not isinstance(input_tokens, int) or not isinstance(output_tokens, int)
        return Usage(
            provider=self.provider,
            model=self.model,
            purpose=request.purpose,
            input_tokens=input_tokens
            if isinstance(input_tokens, int)
            else count_message_tokens(request.messages),
            output_tokens=output_tokens if isinstance(output_tokens, int) else count_tokens(text),
            estimated=estimated,
        )
