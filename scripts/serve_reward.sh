#!/usr/bin/env bash
# Serve the novelty reward over HTTP: one shared state for every vLLM engine, usable with plain OpenRLHF
# (no hook): python -m openrlhf.cli.train_ppo_ray ... --reward.remote_url "http://$HOST:$PORT/reward?token=$TOKEN"
# Use a config with stream.update_every = rollout batch x n: the server sees every engine's samples
# (examples/configs/hypothesis_hookless.yaml).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

NOVELTY_CONFIG=${NOVELTY_CONFIG:-$ROOT/examples/configs/hypothesis_hookless.yaml}
HOST=${HOST:-127.0.0.1}                # 0.0.0.0 when the engines run on other nodes (then set a token)
PORT=${PORT:-5000}
STATE=${STATE:-$ROOT/runs/novelty_server/state.pt}
export OPENRLHF_NOVELTY_TOKEN=${OPENRLHF_NOVELTY_TOKEN:-}   # empty = no auth

SERVER_ARGS=(
  --config "$NOVELTY_CONFIG"
  --host "$HOST" --port "$PORT"
  --state "$STATE" --save-every 300
)

exec openrlhf-novelty serve "${SERVER_ARGS[@]}" "$@"
