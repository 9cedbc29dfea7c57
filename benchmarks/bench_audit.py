"""How long the audit's GRPO pressure simulation takes: 32 prompts x 300 steps, both arms, with a cached judge.

    python benchmarks/bench_audit.py [--steps 300] [--prompts 32]

The shipped corpus has 28 prompts; the first few are repeated under a changed prompt (a new prompt to the reward)
to reach --prompts. The judge is the stand-in (SmolLM2 by probability) answering from
benchmarks/audit/judge_cache.jsonl; judgments it does not hold are made once, before the timed part.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from openrlhf_novelty import audit  # noqa: E402
from openrlhf_novelty.config import NoveltyConfig  # noqa: E402
from openrlhf_novelty.reward import NoveltyReward  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--prompts", type=int, default=32)
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(os.path.join(HERE, "audit_corpus.jsonl"), encoding="utf-8")]
    audited = rows[448:]
    extra = []
    for k in range(max(0, args.prompts - len(audited) // 8)):  # whole groups, under a new prompt
        extra += [{**r, "prompt": r["prompt"] + f" (variant {k})"} for r in audited[8 * k:8 * (k + 1)]]
    rows = rows + extra
    cfg = NoveltyConfig.from_file(os.path.join(HERE, "audit", "stand_in_judge.yaml"))
    model = NoveltyReward(cfg)
    cache = audit.DiskCache(os.path.join(HERE, "audit", "judge_cache.jsonl"), audit.judge_fingerprint(cfg, model.judge))
    model.judge = audit.CachedJudge(model.judge, cache)
    model.watch_checks = False
    for start in range(0, 448, 64):  # the history, as the audit replays it
        batch = rows[start:start + 64]
        model.update(model.score([r["prompt"] for r in batch], [r["response"] for r in batch], 8))
    pools = audit.pressure_pools(rows[448:], 8, view=lambda t: model.extract_texts([t])[0][0])
    texts = [(p, c.text) for p, pool in pools.items() for c in pool]
    model.judge.judge_many([p for p, _ in texts], [model.extract_texts([t])[0][0] for _, t in texts])  # untimed
    cache.save()
    start = time.perf_counter()
    arms = audit.run_pressure(model, pools, args.steps, 8, 1.0, 0)
    took = time.perf_counter() - start
    n = sum(len(p) for p in pools.values())
    print(f"{len(pools)} prompts ({n} candidates) x {args.steps} steps, 2 arms: {took:.0f} s "
          f"({took / (2 * args.steps):.2f} s per step of {8 * len(pools)} samples)")
    end = arms["configured"]["end"]
    print(f"effective honest ideas: configured {end['effective_ideas']:.2f}, "
          f"quality only {arms['quality only']['end']['effective_ideas']:.2f}")


if __name__ == "__main__":
    main()
