"""Cost of the reward model per rollout batch, as a ratio to the bare sentence encoding it cannot avoid.

One batch = 128 prompts x 8 samples = 1024 hypothesis-like texts. Measured in one run, median over repeats:
  encode : SentenceTransformer.encode of the 1024 texts (the floor: every novelty term needs the embeddings)
  total  : NoveltyReward.score (extract, encode once, RND, group diversity, archive kNN at its cap, formula)
           + NoveltyReward.update (RND training step, archive insert)
Then resident memory over many consecutive batches with the archive at its cap.

    python benchmarks/bench_reward.py                      # full: 5 repeats, 200 memory batches
    python benchmarks/bench_reward.py --repeats 2 --memory-batches 10   # quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time

import torch

from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.reward import NoveltyReward

FEATURES = ["mention a concrete number", "ask the reader a question", "include a photo", "tag a well-known account",
            "use an exclamation mark", "start a numbered thread", "share a personal failure", "announce a deadline",
            "quote a statistic", "use a trending hashtag", "make a bold prediction", "express anger",
            "tell a joke", "offer a free resource", "report breaking local news", "thank their followers"]
CONTEXTS = ["the author has few followers", "it is posted on a weekday morning", "the topic is technology",
            "the tweet is under 100 characters", "the account is verified", "the tweet links to a news site",
            "the author rarely tweets", "the audience is mostly students"]


def make_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(FEATURES, 2)
        out.append(f"HYP: Tweets that {a} get {rng.choice(['more', 'fewer'])} retweets than tweets that {b}, "
                   f"especially when {rng.choice(CONTEXTS)}.")
    return out


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--memory-batches", type=int, default=200)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    args = ap.parse_args()

    cfg = NoveltyConfig.from_dict({"extract": {"pattern": r"HYP:\s*(.+)"}}).with_overrides(args.set)
    model = NoveltyReward(cfg)
    size = args.prompts * args.n
    prompts = [f"prompt {i // args.n}" for i in range(size)]
    texts = make_texts(size, 0)
    model.embedder.encode(texts[:64])  # load the model outside the timings
    # Fill the archive to its cap so every timed batch pays the full kNN cost.
    fill = torch.nn.functional.normalize(torch.randn(cfg.archive_size, model.embedder.dim), dim=-1)
    model.archive.add(fill, torch.zeros(cfg.archive_size, dtype=torch.int64))
    model.update(model.score(prompts, texts, args.n))  # past the RND warm-up

    enc, total = [], []
    for r in range(args.repeats):
        batch = make_texts(size, 100 + r)
        t0 = time.perf_counter()
        model.embedder.encode(model.extract_texts(batch)[0])
        enc.append(time.perf_counter() - t0)
        # The synthetic texts repeat across batches (about a fifth); real answers mostly do not, so the model's
        # answer-embedding cache must not make the timing look better than a training step would be.
        model._emb_cache.clear()
        t0 = time.perf_counter()
        model.update(model.score(prompts, batch, args.n))
        total.append(time.perf_counter() - t0)
    e, t = statistics.median(enc), statistics.median(total)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"batch: {args.prompts} prompts x {args.n} = {size} samples, archive {len(model.archive)}/{cfg.archive_size}")
    print(f"bare encode     median {e:.3f} s  ({size / e:.0f} samples/s)")
    print(f"score + update  median {t:.3f} s  ({size / t:.0f} samples/s)")
    print(f"ratio total / encode: {t / e:.3f}  (target <= 1.25)")

    if args.memory_batches:
        rss = []
        t0 = time.perf_counter()
        for b in range(args.memory_batches):
            model.update(model.score(prompts, make_texts(size, 1000 + b), args.n))
            rss.append(rss_mib())
        base = rss[min(9, len(rss) - 1)]
        drift = (max(rss[min(9, len(rss) - 1):]) - base) / base
        print(f"memory over {args.memory_batches} batches ({time.perf_counter() - t0:.0f} s): RSS after batch 10 "
              f"{base:.0f} MiB, max after {max(rss):.0f} MiB, last {rss[-1]:.0f} MiB, growth {100 * drift:+.1f}% "
              f"(target within 5%)")


if __name__ == "__main__":
    main()
