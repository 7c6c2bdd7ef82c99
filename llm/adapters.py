"""The one interface every model adapter speaks: complete, stream, report usage.

`adapter_for(provider=..., model=...)` picks the adapter for a campaign's settings.
Adapters are coroutines: a call waiting on the model holds no thread, no process and
no database connection, so one process keeps many turns in flight. They raise
`ModelError` with a code the room can show (`rate_limited`, `model_error`,
`model_timeout`); they never raise for a merely bad answer: the text comes back and the
caller's parser judges it (`llm.services.model_answer`).

What the answer must look like travels in the request (`AnswerFormat`: a JSON schema,
the tool's name), so this package knows nothing of the game: the orchestrator and
memory import it, it imports neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings

from rpgai.errors import DomainError

PROVIDERS = ("fake", "openai")


@dataclass(frozen=True)
class Usage:
    """What one model call cost, as billing needs it."""

    provider: str
    model: str
    purpose: str  # dm_turn | repair | summary
    input_tokens: int
    output_tokens: int
    # True when the server reported nothing and we counted with our own tokenizer.
    estimated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "purpose": self.purpose,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "estimated": self.estimated,
        }


@dataclass(frozen=True)
class AnswerFormat:
    """The JSON object a call's answer must be, for the output modes that enforce it
    (`json_schema`, `json_object` with its schema, a forced `tool`)."""

    name: str  # the json_schema format's name
    schema: dict[str, Any]
    # The same schema without what small grammar converters reject (llama-cpp-python).
    portable_schema: dict[str, Any]
    tool_name: str
    tool_description: str


@dataclass
class ModelRequest:
    messages: list[dict[str, str]]
    max_tokens: int
    purpose: str = "dm_turn"
    # None: plain text, no response_format.
    answer_format: AnswerFormat | None = None
    # The `fake` provider's answer to this request (the fake DM plans from the turn's
    # facts, not from prose); real providers ignore it.
    fake_reply: Callable[[ModelRequest], str] | None = None
    # time.monotonic() by which the call must be over, retries included.
    deadline: float | None = None

    def seconds_left(self) -> float:
        if self.deadline is None:
            return float(settings.DM_TIMEOUT_SECONDS)
        return self.deadline - time.monotonic()


@dataclass
class ModelReply:
    text: str  # the answer as the model wrote it (JSON, maybe wrapped in prose or <think>)
    usage: Usage
    finish_reason: str | None = None
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class StreamSink(Protocol):
    """Where a streamed answer's text goes as it arrives (the room's narration)."""

    async def feed(self, chunk: str) -> None: ...

    def restart(self) -> None: ...


class ModelError(DomainError):
    """The model call failed (not: the model answered badly)."""

    code = "model_error"


class ModelAdapter(Protocol):
    provider: str
    model: str

    async def complete(self, request: ModelRequest) -> ModelReply: ...

    async def stream(self, request: ModelRequest, sink: StreamSink) -> ModelReply: ...


def adapter_for(*, provider: str = "", model: str = "") -> ModelAdapter:
    """The adapter for a provider and model; blank means the settings' defaults."""
    provider = provider or settings.DM_MODEL_PROVIDER
    if provider == "fake":
        from .fake import FakeModel

        return FakeModel(model=model or "fake-dm")
    if provider == "openai":
        from .openai_adapter import OpenAIModel

        return OpenAIModel(model=model or settings.DM_MODEL)
    raise ModelError(f"unknown model provider {provider!r}; use one of {', '.join(PROVIDERS)}")
