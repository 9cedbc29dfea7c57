#!/usr/bin/env bash
# GRPO for short creative writing: the judge scores craft and coherence (examples/configs/story_rubric.txt), novelty
# pays for stories unlike their siblings and unlike what the policy already wrote (partition diversity + RND).
# One 8-GPU node, all models colocated on GPUs 0-6 (sleeping vLLM between phases), judge on GPU 7:
#   GPU=7 JUDGE_MODEL=Qwen/Qwen2.5-7B-Instruct scripts/serve_judge.sh &
#   bash examples/scripts/grpo_creative_writing.sh
# More nodes: see grpo_hypothesis.sh (ray job submit with OPENRLHF_NOVELTY_CONFIG in --runtime-env-json).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

POLICY=${POLICY:-Qwen/Qwen2.5-3B-Instruct}
PROMPTS=${PROMPTS:-$ROOT/examples/data/creative_prompts.jsonl}
NOVELTY_CONFIG=${NOVELTY_CONFIG:-$ROOT/examples/configs/creative_writing.yaml}
SAVE_DIR=${SAVE_DIR:-$ROOT/runs/grpo_creative_writing}
PYTHON=${PYTHON:-python3}
REWARD_FILE=${REWARD_FILE:-$(openrlhf-novelty path)}

RESOURCE_ARGS=(
  --actor.num_nodes 1 --actor.num_gpus_per_node 7
  --ref.num_nodes 1 --ref.num_gpus_per_node 7
  --vllm.num_engines 7 --vllm.tensor_parallel_size 1 --vllm.gpu_memory_utilization 0.5
  --train.colocate_all --vllm.enable_sleep --ds.enable_sleep
)
MODEL_ARGS=(
  --actor.model_name_or_path "$POLICY"
  --ds.zero_stage 3 --ds.param_dtype bf16 --actor.gradient_checkpointing_enable
)
DATA_ARGS=(
  --data.prompt_dataset "$PROMPTS" --data.input_key prompt --data.apply_chat_template --data.max_len 1536
)
ROLLOUT_ARGS=(
  --rollout.batch_size 56 --rollout.n_samples_per_prompt 8 --rollout.micro_batch_size 8
  --rollout.max_new_tokens 512 --rollout.temperature 1.0 --rollout.top_p 0.95
)
REWARD_ARGS=(
  --reward.remote_url "$REWARD_FILE"
)
ALGO_ARGS=(
  --algo.advantage.estimator group_norm
  --algo.kl.init_coef 0.001 --algo.kl.use_loss --algo.kl.estimator k3
  --actor.adam.lr 5e-7
  --train.batch_size 112 --train.micro_batch_size 2 --train.max_epochs 1 --train.num_episodes 1
)
CKPT_ARGS=(
  --ckpt.path "$SAVE_DIR/ckpt" --ckpt.save_steps 10 --ckpt.load_enable
  --ckpt.output_dir "$SAVE_DIR/model"
  --logger.tensorboard_dir "$SAVE_DIR/tb"
)

exec $PYTHON -m openrlhf_novelty.train_ppo_ray --novelty.config "$NOVELTY_CONFIG" \
  "${RESOURCE_ARGS[@]}" "${MODEL_ARGS[@]}" "${DATA_ARGS[@]}" "${ROLLOUT_ARGS[@]}" "${REWARD_ARGS[@]}" \
  "${ALGO_ARGS[@]}" "${CKPT_ARGS[@]}" "$@"
