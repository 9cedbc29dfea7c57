#!/usr/bin/env bash
# Serve the soundness judge with vLLM's OpenAI-compatible server on its own GPU.
# Then point the novelty config at it:
#   judge:
#     base_url: http://<this host>:${PORT}/v1
#     model: ${SERVED_NAME}
set -euo pipefail

JUDGE_MODEL=${JUDGE_MODEL:-Qwen/Qwen2.5-7B-Instruct}   # any chat model vLLM can serve
SERVED_NAME=${SERVED_NAME:-judge}
PORT=${PORT:-8000}
HOST=${HOST:-0.0.0.0}                                  # the trainer's vLLM engines call it from other processes
GPU=${GPU:-7}                                          # keep it off the GPUs the trainer uses
MAX_MODEL_LEN=${MAX_MODEL_LEN:-4096}

SERVER_ARGS=(
  --model "${JUDGE_MODEL}"
  --served-model-name "${SERVED_NAME}"
  --host "${HOST}" --port "${PORT}"
  --max-model-len "${MAX_MODEL_LEN}"
  --gpu-memory-utilization 0.9
  --enable-prefix-caching        # every request repeats the rubric: prefix caching saves most of the prefill
)

CUDA_VISIBLE_DEVICES="${GPU}" exec python -m vllm.entrypoints.openai.api_server "${SERVER_ARGS[@]}" "$@"
