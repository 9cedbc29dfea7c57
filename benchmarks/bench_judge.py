"""Judge throughput against an OpenAI-compatible endpoint with a fixed latency, versus the ideal.

The endpoint is an aiohttp server (asyncio, like vLLM's own server) in a separate process on 127.0.0.1, answering
every request after ``--latency`` seconds; both share this machine's cores with the client under test. Ideal throughput at concurrency c is c / latency. The prototype called its judge one sample
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
    """An asyncio OpenAI-compatible endpoint (like vLLM's uvicorn server) answering after a fixed latency."""
    import asyncio
    import json

    from aiohttp import web

    async def chat(request):
        body = await request.json()
        await asyncio.sleep(latency)
        message = {"role": "assistant", "content": json.dumps({"score": 7, "reason": "ok"})}
        return web.json_response({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                  "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    async def main():
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        queue.put(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1")
        await asyncio.Event().wait()

    asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--sequential-samples", type=int, default=50)
    ap.add_argument("--pin", action="store_true", help="endpoint on the last core, client on the others")
    ap.add_argument("--transport", nargs="+", default=["aiohttp", "openai"], help="judge.transport values to measure")
    args = ap.parse_args()

    queue = mp.Queue()
    proc = mp.Process(target=serve, args=(args.latency, queue), daemon=True)
    proc.start()
    if args.pin:  # keep the instrument (the endpoint) off the client's core(s)
        last = os.cpu_count() - 1
        os.sched_setaffinity(proc.pid, {last})
        os.sched_setaffinity(0, set(range(last)) or {0})
    url = queue.get(timeout=30)
    try:
        print(f"endpoint latency {args.latency * 1000:.0f} ms, {args.samples} judgments, {os.cpu_count()} cores"
              f"{', endpoint pinned to its own core' if args.pin else ''}")
        for transport in args.transport:
            print(f"judge.transport = {transport}")
            measure(url, args, transport)
    finally:
        proc.terminate()


def measure(url: str, args, transport: str) -> None:
    """Throughput at each concurrency with one judge.transport, and the speed-up over one call at a time."""
    from openrlhf_novelty.config import NoveltyConfig
    from openrlhf_novelty.judge import Judge

    rates = {}
    for c in [1, *args.concurrency]:
        n = args.sequential_samples if c == 1 else args.samples
        j = Judge(NoveltyConfig.from_dict({"judge": {"base_url": url, "model": "m", "concurrency": c,
                                                     "cache_size": 0, "transport": transport}}))
        j.judge_many(["warm"], ["up"])
        responses = [f"response {c}-{i}" for i in range(n)]
        t0 = time.perf_counter()
        if c == 1:  # the prototype's way: one blocking call per sample
            for r in responses:
                j.judge_many(["task"], [r])
        else:
            j.judge_many(["task"] * n, responses)
        dt = time.perf_counter() - t0
        j.close()
        rates[c] = n / dt
        ideal = c / args.latency
        print(f"concurrency {c:>3}: {n} in {dt:6.2f} s = {rates[c]:7.1f}/s, ideal {ideal:6.0f}/s, "
              f"ratio {rates[c] / ideal:.2f}, failures {j.stats.failures}")
    for c in args.concurrency:
        print(f"speed-up at concurrency {c} over one sample at a time: {rates[c] / rates[1]:.1f}x")


if __name__ == "__main__":
    main()
