"""The TRL adapter: the reward function on hand-made batches, and a real GRPOTrainer driving it."""

import json
import math
import os
import sys
import threading
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest

from openrlhf_novelty.config import ConfigError, NoveltyConfig
from openrlhf_novelty.reward import NoveltyReward
from openrlhf_novelty.trl_reward import STATE_FILE, NoveltyRewardFunc, as_text
from tests.conftest import TOY_TEXTS

PATTERN = {"extract": {"pattern": r"HYP:\s*(.+)"}}


def func(embedder, settings=None, **kwargs) -> NoveltyRewardFunc:
    settings = {"quality": TOY_TEXTS, **(settings or PATTERN)}
    f = NoveltyRewardFunc(model=NoveltyReward(NoveltyConfig.from_dict(settings), embedder=embedder),
                          **kwargs)
    f.num_generations = 2  # what the callback reads from GRPOConfig
    return f


def chat(text):
    return [{"role": "assistant", "content": text}]


def test_reward_is_the_formula_on_a_conversational_batch(embedder):
    f = func(embedder, {**PATTERN, "rnd": {"weight": 0.0}, "archive": {"weight": 0.0}})  # diversity alone
    prompts = [[{"role": "user", "content": "Why do tweets spread?"}]] * 2 + [[{"role": "user", "content": "Ideas?"}]] * 2
    prompts += [[{"role": "user", "content": "More ideas?"}]] * 2
    completions = [chat("HYP: Short tweets spread."), chat("HYP: Short tweets spread."),
                   chat("HYP: Bees dance to share maps."), chat("no format at all"),
                   chat("HYP: Bees dance to share maps."), chat("HYP: Ants leave scent trails to food.")]
    metrics = {}
    rewards = f(prompts, completions, log_metric=lambda k, v: metrics.setdefault(k, v))
    # Identical compliant siblings: quality 1, no diversity, reward exactly the quality.
    assert rewards[:2] == [1.0, 1.0]
    # Its only sibling failed the format: a failure is no idea to differ from, so no diversity is paid.
    assert rewards[2] == 1.0
    # No HYP: line: quality 0, and the multiplicative gate pays it no novelty.
    assert rewards[3] == 0.0
    # Compliant answers unlike each other: quality 1 plus 0.5 x their cosine distance (at most 1).
    assert 1.2 < rewards[4] <= 1.5 and rewards[5] == pytest.approx(rewards[4], abs=1e-6)  # cos(a, b) = cos(b, a)
    # The same numbers as the reward model itself (no second implementation).
    direct = NoveltyReward(f.config, embedder=embedder).score(
        ["Why do tweets spread?"] * 2 + ["Ideas?"] * 2 + ["More ideas?"] * 2, [as_text(c) for c in completions], 2)
    assert rewards == pytest.approx(direct.rewards, abs=1e-9)
    assert metrics["novelty/format"] == pytest.approx(5 / 6) and metrics["novelty/failures"] == 0.0


SPLIT_PROMPTS = ["p1"] * 3 + ["p2"] * 3
SPLIT_COMPLETIONS = ["HYP: Rain makes people stay home and post more.", "HYP: Rain makes people post more.",
                     "HYP: Cats dislike water.", "HYP: Volcanoes enrich soil.", "HYP: Ash makes soil fertile.",
                     "HYP: Octopuses taste with their arms."]


def test_a_group_split_across_two_processes_scores_as_in_one(embedder):
    """6 samples in groups of 3 over two ranks of 4 and 2: the second group straddles them."""
    prompts, completions = SPLIT_PROMPTS, SPLIT_COMPLETIONS
    single = func(embedder)
    single.num_generations = 3
    expected = single(prompts, completions)

    barrier, shared = threading.Barrier(2), {}

    def fake_gather(rank):
        def gather(local):
            shared[rank] = local
            barrier.wait()
            return shared[0] + shared[1], 0 if rank == 0 else len(shared[0])
        return gather

    results = {}

    def run(rank, lo, hi):
        f = func(embedder, gather=fake_gather(rank))
        f.num_generations = 3
        results[rank] = f(prompts[lo:hi], completions[lo:hi])

    threads = [threading.Thread(target=run, args=(0, 0, 4)), threading.Thread(target=run, args=(1, 4, 6))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] + results[1] == pytest.approx(expected, abs=1e-9)


def test_the_same_split_over_two_real_processes_gathers_through_torch_distributed(embedder, tmp_path):
    """Two real ranks (torch.distributed.run, gloo on CPU, accelerate's gather_object) get the one-process rewards."""
    import socket
    import subprocess

    single = func(embedder)
    single.num_generations = 3
    expected = single(SPLIT_PROMPTS, SPLIT_COMPLETIONS)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                          "127.0.0.1", "--master_port", port, os.path.join(root, "tests", "trl_split_worker.py"),
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["failures"] for r in ranks] == [0, 0]
    assert ranks[0]["rewards"] + ranks[1]["rewards"] == pytest.approx(expected, abs=1e-5)


def test_task_functions_gate_novelty_and_a_failing_one_falls_back(embedder):
    def accuracy(prompts, completions, **kw):
        return [1.0, 0.0, None, math.nan]

    def broken(prompts, completions, **kw):
        raise RuntimeError("user bug")

    cfg = {"rnd": {"weight": 0.0}, "diversity": {"weight": 0.0}, "archive": {"weight": 0.0}}  # the task alone
    f = func(embedder, cfg, task_funcs=[accuracy])
    assert f(["a", "a", "b", "b"], ["x", "y", "z", "w"]) == [1.0, 0.0, 0.0, 0.0]
    g = func(embedder, cfg, task_funcs=[broken])
    assert g(["a", "a", "b", "b"], ["x", "y", "z", "w"]) == [0.0] * 4
    assert g.failures == 1


def test_a_failing_embedder_falls_back_to_the_quality_reward(embedder):
    f = func(embedder)

    def boom(texts):
        raise RuntimeError("CUDA out of memory")

    f.model.embedder.encode, original = boom, f.model.embedder.encode
    try:
        assert f(["a", "a"], ["HYP: one", "nothing"]) == [1.0, 0.0]
    finally:
        f.model.embedder.encode = original
    assert f.failures == 0 and f.model.encode_failures == 1  # absorbed in the reward: the answers are unembedded


def test_only_training_batches_are_learned_from(embedder):
    f = func(embedder)
    f(["a", "a"], ["HYP: one", "HYP: two"])  # outside a training step: evaluation
    assert f.pending == []
    f.training = True
    f(["a", "a"], ["HYP: one", "HYP: two"])
    f.update()
    assert f.pending == [] and f.updates == 1 and f.model.step == 1


def test_misuse_is_refused_with_a_clear_message(embedder):
    f = func(embedder)
    f.num_generations = None
    with pytest.raises(ConfigError, match="callbacks=\\[novelty.callback\\]"):
        f(["a"], ["b"])
    with pytest.raises(ConfigError, match="not callable"):
        func(embedder, task_funcs=["accuracy"])
    with pytest.raises(ConfigError, match="reward.task_weight is 0"):
        func(embedder, {"reward": {"task_weight": 0.0}}, task_funcs=[lambda **kw: []])


# --- a real GRPOTrainer: tiny random model, tokenizer trained here


def tiny_model_and_tokenizer():
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = ["HYP: short tweets spread", "bees dance to share maps", "rain keeps people home",
              "propose a hypothesis about tweets", "an idea for a city park"] * 20
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "</s>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config), tokenizer


def grpo_trainer(reward, output_dir, max_steps):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = tiny_model_and_tokenizer()
    data = Dataset.from_dict({"prompt": ["propose a hypothesis about tweets", "an idea for a city park"] * 4})
    args = GRPOConfig(output_dir=str(output_dir), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=6, max_steps=max_steps, save_steps=1, logging_steps=1, report_to=[],
                      use_cpu=True, bf16=False, seed=0, learning_rate=1e-3, disable_tqdm=True)
    return GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[reward], args=args,
                       train_dataset=data, callbacks=[reward.callback])


@pytest.fixture
def without_cuda_stand_ins(monkeypatch):
    """The OpenRLHF tests put a MagicMock `vllm` in sys.modules; TRL would take it for a real vLLM install."""
    for name, module in list(sys.modules.items()):
        if isinstance(module, MagicMock):
            monkeypatch.delitem(sys.modules, name)


@pytest.mark.filterwarnings("ignore")
def test_grpo_trainer_updates_rnd_once_per_step_and_checkpoints_it(embedder, tmp_path, without_cuda_stand_ins):
    pytest.importorskip("trl")
    settings = {"rnd": {"warmup_samples": 0}}
    reward = NoveltyRewardFunc(model=NoveltyReward(NoveltyConfig.from_dict(settings), embedder=embedder))
    trainer = grpo_trainer(reward, tmp_path, 2)
    trainer.train()
    assert reward.num_generations == 4
    assert reward.updates == 2 and reward.model.step == 2 and reward.failures == 0
    assert 0 < reward.model.rnd.obs_rms.count <= 8  # it learned from the non-empty samples it scored (2 x 4)
    logged = [h for h in trainer.state.log_history if "novelty/quality" in h]
    assert len(logged) == 2 and all("rewards/novelty/mean" in h for h in logged)
    assert "novelty/rnd_loss" in logged[1]  # an update's stats reach TRL's log with the next batch's metrics
    for step in (1, 2):
        assert os.path.exists(tmp_path / f"checkpoint-{step}" / STATE_FILE)

    # Resume from checkpoint-1: the novelty state comes back at step 1 and one more step makes it 2.
    resumed = NoveltyRewardFunc(model=NoveltyReward(NoveltyConfig.from_dict(settings), embedder=embedder))
    grpo_trainer(resumed, tmp_path, 2).train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    assert resumed.updates == 1 and resumed.model.step == 2


def test_every_batch_scored_in_a_step_is_learned_from(embedder):
    # TRL allows steps_per_generation < gradient_accumulation_steps: two reward calls, one optimizer step.
    # RND and the archive must learn from both batches, once, at the step's end.
    f = func(embedder)
    args = SimpleNamespace(num_generations=2, num_generations_eval=None, output_dir="unused")
    state = SimpleNamespace(global_step=0, is_world_process_zero=True)
    f.callback.on_train_begin(args, state, None)
    f.callback.on_step_begin(args, state, None)
    f(["a", "a"], ["HYP: one", "HYP: two"])
    f(["b", "b"], ["HYP: three", "HYP: four"])
    f.callback.on_step_end(args, state, None)
    assert f.model.step == 1 and f.updates == 1 and f.model.rnd.updates == 1
    assert len(f.model.archive) == 4  # not only the last batch's 2
