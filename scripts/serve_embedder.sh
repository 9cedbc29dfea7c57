#!/usr/bin/env bash
# Serve a long-context sentence encoder with vLLM's pooling runner (an OpenAI-compatible /v1/embeddings endpoint)
# for novelty over whole reasoning traces. Then point the novelty config at it:
#   embed:
#     base_url: http://<this host>:${PORT}/v1
#     model: ${SERVED_NAME}
#     max_chars: 30000          # within the model's context (about 4 characters a token)
# The server reads each answer whole (up to embed.max_chars, beginning and end kept); embed.pooling applies to the
# in-process encoder only. Hugging Face TEI serves the same endpoint: text-embeddings-router --model-id MODEL.
set -euo pipefail

EMBED_MODEL=${EMBED_MODEL:-Qwen/Qwen3-Embedding-0.6B}   # or Alibaba-NLP/gte-modernbert-base (8k tokens)
SERVED_NAME=${SERVED_NAME:-embedder}
PORT=${PORT:-8001}
HOST=${HOST:-0.0.0.0}                                    # the reward runs in the trainer's vLLM engines
GPU=${GPU:-7}                                            # keep it off the GPUs the trainer uses
MAX_MODEL_LEN=${MAX_MODEL_LEN:-8192}

SERVER_ARGS=(
  --model "${EMBED_MODEL}"
  --runner pooling
  --served-model-name "${SERVED_NAME}"
  --host "${HOST}" --port "${PORT}"
  --max-model-len "${MAX_MODEL_LEN}"
  --gpu-memory-utilization 0.3   # an encoder is small: leave the GPU to others
)

CUDA_VISIBLE_DEVICES="${GPU}" exec python -m vllm.entrypoints.openai.api_server "${SERVER_ARGS[@]}" "$@"
