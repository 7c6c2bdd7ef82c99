"""The one interface every DM model adapter speaks: complete, stream, report usage.

`adapter_for(provider=..., model=...)` picks the adapter for a campaign's settings.
Adapters raise `ModelError` with a code the room can show (`rate_limited`,
`model_error`, `model_timeout`); they never raise for a merely bad answer: the text
comes back and the turn's parser judges it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings

from rpgai.errors import DomainError

if TYPE_CHECKING:
    from .prompt import TurnContext

PROVIDERS = ("fake", "openai")


@dataclass(frozen=True)
class Usage:
    """What one model call cost, as billing needs it."""

    provider: str
    model: str
    purpose: str  # dm_turn | repair
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


@dataclass
class ModelRequest:
    messages: list[dict[str, str]]
    max_tokens: int
    purpose: str = "dm_turn"
    # Structured facts of the turn: the fake model answers from them instead of prose.
    context: TurnContext | None = None
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
    def feed(self, chunk: str) -> None: ...

    def restart(self) -> None: ...


class ModelError(DomainError):
    """The model call failed (not: the model answered badly)."""

    code = "model_error"


class ModelAdapter(Protocol):
    provider: str
    model: str

    def complete(self, request: ModelRequest) -> ModelReply: ...

    def stream(self, request: ModelRequest, sink: StreamSink) -> ModelReply: ...


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
