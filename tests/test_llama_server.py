"""A real OpenAI-compatible server that no one here wrote: llama-cpp-python's, with a small
GGUF model published on PyPI (Gemma 3 270M), plays a DM turn with default settings
(nothing but its URL and the model's name): the narration streams to the room and the
`dm_narration` is the model's own answer, not the fallback.

The server is built once into a cache outside the clone by `.ci/llama_server.sh` (which
`.ci/run` calls and which says what it did); it exports RPGAI_LLAMA_PYTHON (the venv's
python) and RPGAI_LLAMA_MODEL (the .gguf). Without them this test skips, saying why.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from llm.openai_adapter import output_shapes_forget
from rpgai.tasks import wait_idle
from tests.processes import llama_server
from tests.ws import Room

LLAMA_PYTHON = os.environ.get("RPGAI_LLAMA_PYTHON", "")
LLAMA_MODEL = os.environ.get("RPGAI_LLAMA_MODEL", "")
MODEL_NAME = "gemma-3-270m"


def _missing() -> str:
    if not LLAMA_PYTHON or not LLAMA_MODEL:
        return (
            "RPGAI_LLAMA_PYTHON and RPGAI_LLAMA_MODEL are not set: run .ci/llama_server.sh "
            "(.ci/run does) to build llama-cpp-python's server and install the model"
        )
    if not Path(LLAMA_PYTHON).exists():
        return f"RPGAI_LLAMA_PYTHON={LLAMA_PYTHON} does not exist"
    if not Path(LLAMA_MODEL).exists():
        return f"RPGAI_LLAMA_MODEL={LLAMA_MODEL} does not exist"
    return ""


pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(bool(_missing()), reason=_missing() or "ready"),
]


async def test_llama_cpp_python_plays_a_turn_with_default_settings(
    campaign, alice, settings, tmp_path
):
    log_file = tmp_path / "llama.log"
    with llama_server(
        python=LLAMA_PYTHON, model=LLAMA_MODEL, alias=MODEL_NAME, log_file=log_file
    ) as url:
        # Only what an operator sets: the provider, the URL, the model's name, a dummy key.
        settings.DM_MODEL_PROVIDER = "openai"
        settings.OPENAI_BASE_URL = url
        settings.DM_MODEL = MODEL_NAME
        settings.OPENAI_API_KEY = "sk-no-key-needed"
        output_shapes_forget(base_url=url, model=MODEL_NAME)
        # Kept small so that a turn takes seconds on two cores.
        settings.DM_MAX_TOKENS = 300
        settings.DM_PROMPT_TOKEN_BUDGET = 3500
        # Two shared cores read the ~2,400-token prompt in about 40 s before the first
        # byte: past the default 45 s of silence on a busy CI machine. Not a product
        # default: a real deployment's server answers far sooner.
        settings.DM_TIMEOUT_SECONDS = 180
        settings.DM_TURN_DEADLINE_SECONDS = 220

        room = Room(campaign.id, alice)
        connected, _ = await room.open()
        assert connected
        try:
            await room.hello()
            started = time.monotonic()
            await room.send(
                {
                    "type": "client.player_action",
                    "action_id": str(uuid.uuid4()),
                    "text": "I draw my sword and attack the goblin by the campfire",
                }
            )
            seen = await room.recv_until(
                lambda m: (
                    m["type"] == "event" and m["event"]["type"] in ("dm_narration", "turn_failed")
                ),
                timeout=240,
            )
            took = time.monotonic() - started
            await wait_idle()
        finally:
            await room.close()

    last = seen[-1]["event"]
    log_tail = log_file.read_text(errors="replace")[-3000:]
    assert last["type"] == "dm_narration", (last["payload"], log_tail)
    narration = last["payload"]
    deltas = [m for m in seen if m["type"] == "narration.delta"]
    print(f"\nllama-cpp-python turn in {took:.1f}s, {len(deltas)} deltas: {narration['text']!r}")
    assert narration["fallback"] is False, log_tail
    assert narration["text"].strip() and narration["options"]
    # The narration streamed to the room before the event that replaces it.
    assert deltas, "no narration.delta reached the room"
    assert "".join(m["text"] for m in deltas).strip() == narration["text"]
