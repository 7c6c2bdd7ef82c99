"""The `fake` provider: answers with what the caller's `fake_reply` writes.

What runs with nothing configured, and what tests play against. It speaks the same
interface as a real model: the answer is streamed in small chunks (so the streaming path
is exercised, with `DM_FAKE_CHUNK_DELAY_SECONDS` between them) and usage is counted with
the tokenizer, so that billing does real arithmetic. The game's own fake DM (what it
answers to a turn) is `orchestrator.fake.fake_answer`.
"""

from __future__ import annotations

import asyncio

from django.conf import settings

from .adapters import ModelError, ModelReply, ModelRequest, StreamSink, Usage
from .tokens import count_message_tokens, count_tokens

CHUNK_CHARS = 12


class FakeModel:
    provider = "fake"

    def __init__(self, *, model: str = "fake-dm") -> None:
        self.model = model

    def _answer(self, request: ModelRequest) -> tuple[str, Usage]:
        if request.fake_reply is None:
            raise ModelError("the fake model has no answer for this call", code="model_error")
        text = request.fake_reply(request)
        usage = Usage(
            provider=self.provider,
            model=self.model,
            purpose=request.purpose,
            input_tokens=count_message_tokens(request.messages),
            output_tokens=count_tokens(text),
        )
        return text, usage

    async def complete(self, request: ModelRequest) -> ModelReply:
        text, usage = self._answer(request)
        return ModelReply(text=text, usage=usage, finish_reason="stop")

    async def stream(self, request: ModelRequest, sink: StreamSink) -> ModelReply:
        text, usage = self._answer(request)
        delay = settings.DM_FAKE_CHUNK_DELAY_SECONDS
        for start in range(0, len(text), CHUNK_CHARS):
            if delay:
                await asyncio.sleep(delay)
            await sink.feed(text[start : start + CHUNK_CHARS])
        return ModelReply(text=text, usage=usage, finish_reason="stop")
