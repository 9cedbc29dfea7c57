#!/usr/bin/env bash
# GRPO for hypothesis generation (the prototype's task) with novelty gated by a vLLM-served soundness judge.
# One 8-GPU node: GPUs 0-3 train actor + reference, 4-6 run vLLM rollouts, 7 serves the judge:
#   GPU=7 JUDGE_MODEL=Qwen/Qwen2.5-7B-Instruct scripts/serve_judge.sh &     # judge on :8000 (configs point there)
#   bash examples/scripts/grpo_hypothesis.sh
# More nodes: start Ray on each (ray start --head / --address), raise --actor.num_nodes / --vllm.num_engines and
# submit with `ray job submit --runtime-env-json '{"env_vars": {"OPENRLHF_NOVELTY_CONFIG": "'$NOVELTY_CONFIG'"}}'
# -- python -m openrlhf_novelty.train_ppo_ray ...` so every node's reward file reads the same config.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

POLICY=${POLICY:-Qwen/Qwen2.5-1.5B-Instruct}
PROMPTS=${PROMPTS:-$ROOT/openrlhf_novelty/data/hypothesis_prompts.jsonl}  # or convert HypoBench: openrlhf-novelty convert-hypobench
NOVELTY_CONFIG=${NOVELTY_CONFIG:-$ROOT/examples/configs/hypothesis.yaml}
SAVE_DIR=${SAVE_DIR:-$ROOT/runs/grpo_hypothesis}
PYTHON=${PYTHON:-python3}
REWARD_FILE=${REWARD_FILE:-$(openrlhf-novelty path)}              # the reward file OpenRLHF loads in each vLLM engine

RESOURCE_ARGS=(
  --actor.num_nodes 1 --actor.num_gpus_per_node 4
  --ref.num_nodes 1 --ref.num_gpus_per_node 4
  --train.colocate_actor_ref
  --vllm.num_engines 3 --vllm.tensor_parallel_size 1 --vllm.gpu_memory_utilization 0.85
)
MODEL_ARGS=(
  --actor.model_name_or_path "$POLICY"
  --ds.zero_stage 2 --ds.param_dtype bf16 --actor.gradient_checkpointing_enable
)
DATA_ARGS=(
  --data.prompt_dataset "$PROMPTS" --data.input_key prompt --data.label_key label --data.apply_chat_template
  --data.max_len 1024
)
ROLLOUT_ARGS=(
  --rollout.batch_size 64 --rollout.n_samples_per_prompt 8 --rollout.micro_batch_size 8
  --rollout.max_new_tokens 256 --rollout.temperature 1.0
)
# Quality per sample (format + judge) from the reward file; the hook adds the gated novelty per rollout batch.
REWARD_ARGS=(
  --reward.remote_url "$REWARD_FILE"
)
ALGO_ARGS=(
  --algo.advantage.estimator group_norm
  --algo.kl.init_coef 0.001 --algo.kl.use_loss --algo.kl.estimator k3
  --actor.adam.lr 1e-6
  --train.batch_size 128 --train.micro_batch_size 4 --train.max_epochs 1 --train.num_episodes 2
)
CKPT_ARGS=(
  --ckpt.path "$SAVE_DIR/ckpt" --ckpt.save_steps 20 --ckpt.load_enable
  --ckpt.output_dir "$SAVE_DIR/model"
  --logger.tensorboard_dir "$SAVE_DIR/tb"
)

exec $PYTHON -m openrlhf_novelty.train_ppo_ray --novelty.config "$NOVELTY_CONFIG" \
  "${RESOURCE_ARGS[@]}" "${MODEL_ARGS[@]}" "${DATA_ARGS[@]}" "${ROLLOUT_ARGS[@]}" "${REWARD_ARGS[@]}" \
  "${ALGO_ARGS[@]}" "${CKPT_ARGS[@]}" "$@"
