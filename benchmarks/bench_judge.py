"""Judge throughput against an OpenAI-compatible endpoint with a fixed latency, versus the ideal.

The endpoint is tests/fake_openai.py in a separate process on 127.0.0.1, answering every request after
``--latency`` seconds. Ideal throughput at concurrency c is c / latency. The prototype called its judge one sample
at a time; that rate is measured on a subset and the speed-up reported.

    python benchmarks/bench_judge.py            # 1024 judgments at concurrency 16 and 64, latency 100 ms
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def serve(latency: float, queue) -> None:
    from tests.fake_openai import FakeOpenAI

    with FakeOpenAI(latency=latency) as server:
        queue.put(server.url)
        while True:
            time.sleep(3600)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--sequential-samples", type=int, default=50)
    args = ap.parse_args()

    from openrlhf_novelty.config import NoveltyConfig
    from openrlhf_novelty.judge import Judge

    queue = mp.Queue()
    proc = mp.Process(target=serve, args=(args.latency, queue), daemon=True)
    proc.start()
    url = queue.get(timeout=30)
    try:
        print(f"endpoint latency {args.latency * 1000:.0f} ms, {args.samples} judgments, {os.cpu_count()} cores")
        rates = {}
        for c in [1, *args.concurrency]:
            n = args.sequential_samples if c == 1 else args.samples
            j = Judge(NoveltyConfig.from_dict({"judge": {"base_url": url, "model": "m", "concurrency": c,
                                                         "cache_size": 0}}))
            j.judge_many(["warm"], ["up"])
            responses = [f"response {c}-{i}" for i in range(n)]
            t0 = time.perf_counter()
            if c == 1:  # the prototype's way: one blocking call per sample
                for r in responses:
                    j.judge_many(["task"], [r])
            else:
                j.judge_many(["task"] * n, responses)
            dt = time.perf_counter() - t0
            rates[c] = n / dt
            ideal = c / args.latency
            print(f"concurrency {c:>3}: {n} in {dt:6.2f} s = {rates[c]:7.1f}/s, ideal {ideal:6.0f}/s, "
                  f"ratio {rates[c] / ideal:.2f}, failures {j.stats.failures}")
        for c in args.concurrency:
            print(f"speed-up at concurrency {c} over one sample at a time: {rates[c] / rates[1]:.1f}x")
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
