#!/usr/bin/env bash
# GRPO for math: correctness (examples/math_reward.py, your own reward_func) is the quality; among correct
# solutions, those that solve the problem differently from their siblings and from past solutions earn more.
# No judge: the threshold gate pays novelty only to correct answers. Dynamic filtering drops groups that are all
# right or all wrong on *correctness* (the reward file returns correctness as `scores`).
# One 8-GPU node, colocated; more nodes: see grpo_hypothesis.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

POLICY=${POLICY:-Qwen/Qwen2.5-Math-1.5B-Instruct}
PROMPTS=${PROMPTS:-$ROOT/examples/data/math_prompts.jsonl}
NOVELTY_CONFIG=${NOVELTY_CONFIG:-$ROOT/examples/configs/math.yaml}
SAVE_DIR=${SAVE_DIR:-$ROOT/runs/grpo_math_novelty}
PYTHON=${PYTHON:-python3}
REWARD_FILE=${REWARD_FILE:-$(openrlhf-novelty path)}

RESOURCE_ARGS=(
  --actor.num_nodes 1 --actor.num_gpus_per_node 8
  --ref.num_nodes 1 --ref.num_gpus_per_node 8
  --vllm.num_engines 8 --vllm.tensor_parallel_size 1 --vllm.gpu_memory_utilization 0.6
  --train.colocate_all --vllm.enable_sleep --ds.enable_sleep
)
MODEL_ARGS=(
  --actor.model_name_or_path "$POLICY"
  --ds.zero_stage 2 --ds.param_dtype bf16 --actor.gradient_checkpointing_enable
)
DATA_ARGS=(
  --data.prompt_dataset "$PROMPTS" --data.input_key prompt --data.label_key label --data.apply_chat_template
  --data.max_len 2048
)
ROLLOUT_ARGS=(
  --rollout.batch_size 128 --rollout.n_samples_per_prompt 8 --rollout.micro_batch_size 16
  --rollout.max_new_tokens 1024 --rollout.temperature 1.0
)
REWARD_ARGS=(
  --reward.remote_url "$REWARD_FILE"
  --algo.dynamic_filtering_enable --algo.dynamic_filtering_range 0.01 0.99
)
ALGO_ARGS=(
  --algo.advantage.estimator group_norm
  --algo.kl.init_coef 0.0
  --actor.adam.lr 1e-6
  --train.batch_size 256 --train.micro_batch_size 4 --train.max_epochs 1 --train.num_episodes 4
)
CKPT_ARGS=(
  --ckpt.path "$SAVE_DIR/ckpt" --ckpt.save_steps 20 --ckpt.load_enable
  --ckpt.output_dir "$SAVE_DIR/model"
  --logger.tensorboard_dir "$SAVE_DIR/tb"
)

exec $PYTHON -m openrlhf_novelty.train_ppo_ray --novelty.config "$NOVELTY_CONFIG" \
  "${RESOURCE_ARGS[@]}" "${MODEL_ARGS[@]}" "${DATA_ARGS[@]}" "${ROLLOUT_ARGS[@]}" "${REWARD_ARGS[@]}" \
  "${ALGO_ARGS[@]}" "${CKPT_ARGS[@]}" "$@"
