"""Settings for bench/voice_latency.py: the project's, with the audio in a scratch folder."""

import os

from rpgai.settings import *  # noqa: F403

MEDIA_ROOT = os.environ["BENCH_MEDIA_ROOT"]
