"""How the quality conditions were calibrated and the judge's number blinding chosen: measured, not guessed.

    python benchmarks/bench_quality.py --out runs/quality     # ~15 min on 2 CPU cores (the judge dominates)

1. SmolLM2-135M-Instruct writes 4 answers to each of the A/B's 48 held-out prompts (benchmarks/ab_prompts.py).
2. Relevance: the z-score of each answer (cosine to its own prompt against the other 47) for the answers as
   written, and for the same answers paired with a random other prompt (a prompt-independent answer).
3. The judge: SmolLM2 read by probability scores --judge-answers answers as written and with a number added (leading
   "9", "95%", "10/10", a "9" in mid-sentence, "Ten out of ten."), raw and with judge.blind_numbers.
Prints the tables BENCHMARKS.md shows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from ab_prompts import PATTERN, build  # noqa: E402

VARIANTS = {
    "leading '9'": lambda t: "9 " + t,
    "leading '95%'": lambda t: "95% " + t,
    "leading '10/10'": lambda t: "10/10 " + t,
    "'9' mid-sentence": lambda t: " ".join(t.split()[:3] + ["9"] + t.split()[3:]),
    "'Ten out of ten.'": lambda t: "Ten out of ten. " + t,
}


def answers(path: str, k: int) -> list[dict]:
    if os.path.exists(path):
        with open(path) as fh:
            return json.load(fh)
    import torch

    from openrlhf_novelty.lm import ChatLM

    torch.manual_seed(0)
    held = build()[1]
    lm = ChatLM.shared("smollm2")
    rows = []
    for i in range(0, len(held), 8):
        for p, replies in zip(held[i:i + 8], lm.sample(held[i:i + 8], k, 48, 1.0)):
            rows += [{"prompt": p, "response": r} for r in replies]
    with open(path, "w") as fh:
        json.dump(rows, fh)
    return rows


def quantiles(x) -> str:
    return f"{float(x.mean()):+.2f} | {float(x.quantile(0.1)):+.2f} | {float(x.median()):+.2f} | " \
           f"{float(x.quantile(0.9)):+.2f}"


def relevance_table(rows: list[dict]) -> str:
    import torch

    from openrlhf_novelty.checks import relevance
    from openrlhf_novelty.embed import Embedder
    from openrlhf_novelty.text import extract

    texts = [extract(r["response"], PATTERN)[0] for r in rows]
    prompts = sorted({r["prompt"] for r in rows})
    e = Embedder()
    a, p = e.encode(texts), e.encode(prompts)
    own = torch.tensor([prompts.index(r["prompt"]) for r in rows])
    shuffled = own[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))]
    sims = a @ p.T
    lines = ["| answers paired with | z mean | q10 | median | q90 | relevance mean | on-topic (>= 0.5) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, idx in (("their own prompt", own), ("a random other prompt", shuffled)):
        mask = torch.ones_like(sims, dtype=torch.bool)
        mask[torch.arange(len(rows)), idx] = False
        others = sims[mask].view(len(rows), -1)
        z = (sims[torch.arange(len(rows)), idx] - others.mean(1)) / others.std(1)
        rel, _ = relevance(a, p[idx], idx, torch.arange(len(prompts)), p, (0.5, 2.0), 4)
        lines.append(f"| {name} | {quantiles(z)} | {float(rel.mean()):.2f} | {float((rel >= 0.5).double().mean()):.2f} |")
    return "\n".join(lines)


def judge_table(rows: list[dict], n: int) -> str:
    from openrlhf_novelty.config import NoveltyConfig
    from openrlhf_novelty.judge import Judge
    from openrlhf_novelty.text import extract

    picked = rows[:: max(1, len(rows) // n)][:n]
    prompts = [r["prompt"] for r in picked]
    texts = [extract(r["response"], PATTERN)[0] or r["response"] for r in picked]
    lines = [f"| added to {len(picked)} answers | raw: mean shift | raw: max abs | blinded: mean shift | "
             "blinded: max abs |", "| --- | --- | --- | --- | --- |"]
    results = {}
    for blind in (False, True):
        j = Judge(NoveltyConfig.from_dict({"judge": {"local_path": "smollm2", "local_scoring": "probability",
                                                     "blind_numbers": blind, "cache_size": 0}}))
        base = j.judge_many(prompts, texts)[0]
        results[blind, "base"] = sum(base) / len(base)
        for name, f in VARIANTS.items():
            d = [s - b for s, b in zip(j.judge_many(prompts, [f(t) for t in texts])[0], base)]
            results[blind, name] = (sum(d) / len(d), max(map(abs, d)))
    for name in VARIANTS:
        (rm, rx), (bm, bx) = results[False, name], results[True, name]
        lines.append(f"| {name} | {rm:+.3f} | {rx:.3f} | {bm:+.3f} | {bx:.3f} |")
    lines.append(f"\nmean soundness as written: raw {results[False, 'base']:.3f}, blinded {results[True, 'base']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/quality")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--judge-answers", type=int, default=64)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t = time.time()
    rows = answers(os.path.join(args.out, "answers.json"), args.k)
    print(f"{len(rows)} answers to {len({r['prompt'] for r in rows})} held-out prompts ({time.time() - t:.0f} s)\n")
    print(relevance_table(rows) + "\n", flush=True)
    t = time.time()
    print(judge_table(rows, args.judge_answers))
    print(f"\njudge: {time.time() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
