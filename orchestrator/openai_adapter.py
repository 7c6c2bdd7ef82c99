"""The `openai` provider: the official SDK against OpenAI or any compatible server.

`OPENAI_BASE_URL` and `DM_MODEL` point it at OpenAI, vLLM, Ollama or llama.cpp's server.
`OPENAI_API_STYLE` picks the API: `chat` (Chat Completions, which most compatible servers
speak) or `responses`. `DM_OUTPUT_MODE` picks how the answer's shape is enforced:
`json_schema` (structured output) or `tool` (one forced function, `dm_turn`, whose
arguments are the answer). Either way the answer is the same JSON object, streamed.

Retries are ours, not the SDK's (it is built with `max_retries=0`): 429, 5xx and
connection failures are retried with exponential backoff (honouring `Retry-After`)
while the turn's deadline allows; 401, 403 and other 4xx are not; a timeout is not
either, since a server that hung once will keep the players waiting again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import openai
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from .adapters import ModelError, ModelReply, ModelRequest, StreamSink, Usage
from .schema import ANSWER_TOOL_NAME, answer_json_schema
from .tokens import count_message_tokens, count_tokens

log = logging.getLogger(__name__)

RETRY_AFTER_MAX_SECONDS = 30.0
ANSWER_FORMAT_NAME = "dm_answer"
ANSWER_TOOL_DESCRIPTION = "Give your whole answer to the players' turn."

_clients: dict[tuple[str | None, str], openai.OpenAI] = {}
_clients_lock = threading.Lock()


def _client(base_url: str | None, api_key: str) -> openai.OpenAI:
    """One client (one connection pool) per server and key, shared by turns."""
    key = (base_url, api_key)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = openai.OpenAI(
                # Local servers take no key, but the SDK insists on one.
                api_key=api_key or "no-key",
                base_url=base_url,
                max_retries=0,
            )
            _clients[key] = client
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


def _reraise_time_limit(exc: BaseException) -> None:
    """The SDK wraps whatever interrupts a request in APIConnectionError; a Celery soft
    time limit must still reach the turn, which records it and gives up."""
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, SoftTimeLimitExceeded):
            raise cause
        cause = cause.__cause__ or cause.__context__


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
        if self.output_mode not in ("json_schema", "tool"):
            raise ModelError(
                f"DM_OUTPUT_MODE must be json_schema or tool, not {self.output_mode!r}"
            )

    # --- The interface -----------------------------------------------------------------------

    def complete(self, request: ModelRequest) -> ModelReply:
        return self._with_retries(request, None)

    def stream(self, request: ModelRequest, sink: StreamSink) -> ModelReply:
        return self._with_retries(request, sink)

    # --- Retries -----------------------------------------------------------------------------

    def _with_retries(self, request: ModelRequest, sink: StreamSink | None) -> ModelReply:
        attempt = 0
        while True:
            attempt += 1
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
                reply = self._once(request, sink, timeout)
                reply.attempts = attempt
                return reply
            except openai.OpenAIError as exc:
                _reraise_time_limit(exc)
                outcome = _classify(exc)
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
            time.sleep(wait)

    def _once(self, request: ModelRequest, sink: StreamSink | None, timeout: Any) -> ModelReply:
        client = _client(self.base_url, self.api_key)
        if self.api_style == "chat":
            kwargs = self._chat_kwargs(request)
            if sink is None:
                return self._chat_reply(
                    request, client.chat.completions.create(**kwargs, timeout=timeout)
                )
            stream = client.chat.completions.create(
                **kwargs, stream=True, stream_options={"include_usage": True}, timeout=timeout
            )
            return self._chat_stream(request, stream, sink)
        kwargs = self._responses_kwargs(request)
        if sink is None:
            return self._responses_reply(
                request, client.responses.create(**kwargs, timeout=timeout)
            )
        stream = client.responses.create(**kwargs, stream=True, timeout=timeout)
        return self._responses_stream(request, stream, sink)

    # --- Chat Completions --------------------------------------------------------------------

    def _chat_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": request.messages}
        # OpenAI's newer models take only max_completion_tokens; compatible servers know
        # max_tokens (and some only that).
        limit_name = "max_completion_tokens" if self.base_url is None else "max_tokens"
        kwargs[limit_name] = request.max_tokens
        schema = answer_json_schema()
        if self.output_mode == "tool":
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": ANSWER_TOOL_NAME,
                        "description": ANSWER_TOOL_DESCRIPTION,
                        "parameters": schema,
                    },
                }
            ]
            kwargs["tool_choice"] = {"type": "function", "function": {"name": ANSWER_TOOL_NAME}}
        else:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": ANSWER_FORMAT_NAME, "schema": schema, "strict": False},
            }
        return kwargs

    def _chat_reply(self, request: ModelRequest, response: Any) -> ModelReply:
        choices = _get(response, "choices", [])
        if not choices:
            raise ModelError("the model server sent no choices", code="model_error")
        message = _get(choices[0], "message")
        text = _get(message, "content", "") or ""
        for call in _get(message, "tool_calls", []) or []:
            function = _get(call, "function")
            if _get(function, "name") == ANSWER_TOOL_NAME:
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

    def _chat_stream(self, request: ModelRequest, stream: Any, sink: StreamSink) -> ModelReply:
        parts: list[str] = []
        tool_parts: list[str] = []
        answer_index: int | None = None
        input_tokens = output_tokens = None
        finish_reason = None
        with stream:
            for chunk in stream:
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
                    if content:
                        parts.append(content)
                        if self.output_mode == "json_schema":
                            sink.feed(content)
                    for call in _get(delta, "tool_calls", []) or []:
                        function = _get(call, "function")
                        index = _get(call, "index", 0)
                        if _get(function, "name") == ANSWER_TOOL_NAME and answer_index is None:
                            answer_index = index
                        arguments = _get(function, "arguments")
                        if arguments and index == (answer_index if answer_index is not None else 0):
                            tool_parts.append(arguments)
                            sink.feed(arguments)
        text = "".join(tool_parts) if tool_parts else "".join(parts)
        if tool_parts == [] and self.output_mode == "tool" and parts:
            sink.feed("".join(parts))  # the server ignored the tool: the content is the answer
        return ModelReply(
            text=text,
            usage=self._usage(request, text, input_tokens, output_tokens),
            finish_reason=finish_reason,
        )

    # --- Responses ---------------------------------------------------------------------------

    def _responses_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "input": [{"role": m["role"], "content": m["content"]} for m in request.messages],
            "max_output_tokens": request.max_tokens,
            "store": False,
        }
        schema = answer_json_schema()
        if self.output_mode == "tool":
            kwargs["tools"] = [
                {
                    "type": "function",
                    "name": ANSWER_TOOL_NAME,
                    "description": ANSWER_TOOL_DESCRIPTION,
                    "parameters": schema,
                    "strict": False,
                }
            ]
            kwargs["tool_choice"] = {"type": "function", "name": ANSWER_TOOL_NAME}
        else:
            kwargs["text"] = {
                "format": {
                    "type": "json_schema",
                    "name": ANSWER_FORMAT_NAME,
                    "schema": schema,
                    "strict": False,
                }
            }
        return kwargs

    def _responses_text(self, response: Any) -> str:
        texts: list[str] = []
        for item in _get(response, "output", []) or []:
            kind = _get(item, "type")
            if kind == "function_call" and _get(item, "name") == ANSWER_TOOL_NAME:
                return _get(item, "arguments", "") or ""
            if kind == "message":
                for part in _get(item, "content", []) or []:
                    if _get(part, "type") == "output_text":
                        texts.append(_get(part, "text", "") or "")
            # "reasoning" items are skipped: reasoning never reaches players.
        return "".join(texts)

    def _responses_reply(self, request: ModelRequest, response: Any) -> ModelReply:
        self._responses_check_status(response)
        text = self._responses_text(response)
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

    def _responses_stream(self, request: ModelRequest, stream: Any, sink: StreamSink) -> ModelReply:
        parts: list[str] = []
        tool_parts: list[str] = []
        final: Any = None
        with stream:
            for event in stream:
                self._check_deadline(request)
                kind = _get(event, "type")
                if kind == "response.output_text.delta":
                    delta = _get(event, "delta", "")
                    parts.append(delta)
                    if self.output_mode == "json_schema":
                        sink.feed(delta)
                elif kind == "response.function_call_arguments.delta":
                    delta = _get(event, "delta", "")
                    tool_parts.append(delta)
                    sink.feed(delta)
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
            text = self._responses_text(final)
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
