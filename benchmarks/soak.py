"""Memory over a long run: 100,000 samples through the streaming reward (the path with the most state).

Every sample is a new short text for one of 20,000 prompts, so every bounded structure fills and must stay at its bound: the
archive (archive.size), the per-prompt sibling memory (stream.max_prompts), the pending RND batch, and with --judge
the judge's LRU cache (judge.cache_size, against a loopback fake endpoint). Resident memory is sampled every 10,000
samples; the figure is its growth after the first 20,000 (once every structure is full).

    python benchmarks/soak.py                    # 100k samples
    python benchmarks/soak.py --samples 20000    # quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_reward import FEATURES  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--per-call", type=int, default=64, help="samples per reward call (the server batches these)")
    ap.add_argument("--judge", action="store_true", help="also judge every sample (loopback fake endpoint)")
    args = ap.parse_args()

    from openrlhf_novelty.config import NoveltyConfig
    from openrlhf_novelty.remote import RemoteReward

    settings = {"extract": {"pattern": r"HYP:\s*(.+)"},
                # On arrival (group_timeout 0): the per-prompt sibling memory is the structure that grows here;
                # groups still filling are requests in flight, bounded by them.
                "stream": {"update_every": 256, "group_size": 8, "max_prompts": 4096, "group_timeout": 0},
                "archive": {"size": 10000}, "judge": {"cache_size": 5000}}
    fake = None
    if args.judge:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from tests.fake_openai import FakeOpenAI

        fake = FakeOpenAI().__enter__()
        settings["judge"].update(base_url=fake.url, model="fake")
    remote = RemoteReward(NoveltyConfig.from_dict(settings))
    rng = random.Random(0)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.samples} samples, "
          f"{args.per_call} per call{', judged' if args.judge else ''}")
    print(f"{'samples':>9} {'RSS MB':>8} {'archive':>8} {'prompts':>8} {'pending':>8} {'judge cache':>12} {'s':>6}")
    start, marks, done = time.time(), {}, 0
    while done < args.samples:
        prompts, queries = [], []
        for _ in range(args.per_call):
            p = f"Task {rng.randrange(20000)}: propose a hypothesis.\n"
            prompts.append(p)
            # Short texts (the encoder's cost is not what this measures), every one of them new.
            queries.append(p + f"HYP: tweets that {rng.choice(FEATURES)} win, case {done}")
            done += 1
        out = remote(queries, prompts, None)
        assert not any(out["extra_logs"]["novelty/error"]), "a reward call failed"
        if done % 10_000 < args.per_call:
            mark = rss_mb()
            marks[done] = mark
            cache = len(remote.model.judge._cache) if remote.model.judge else 0
            print(f"{done:>9} {mark:>8.0f} {len(remote.model.archive):>8} {len(remote.stream._siblings):>8} "
                  f"{len(remote.stream._pending):>8} {cache:>12} {time.time() - start:>6.0f}", flush=True)
    base = next((v for k, v in marks.items() if k >= 20_000), None)
    if base is not None:
        print(f"RSS growth after 20k samples: {100 * (rss_mb() - base) / base:+.1f}% ({base:.0f} -> {rss_mb():.0f} MB)")
    print(f"{done} samples in {time.time() - start:.0f} s ({done / (time.time() - start):.0f} samples/s), "
          f"{remote.errors} failed calls")
    if fake is not None:
        remote.model.judge.close()
        fake.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
