"""The reward server under OpenRLHF's load: 16 vLLM engines x 32 requests in flight, one sample per request.

`openrlhf-novelty serve` runs in its own process; this process plays the engines with OpenRLHF's client pattern
(aiohttp, a new session per request, one query per request) for --seconds, and reports errors, requests/s and latency
percentiles, for the hook setup (the server returns per-sample quality: format here) and for streaming novelty
(the server also embeds each sample and updates RND every 64).

    python benchmarks/bench_server.py                   # 60 s per mode
    python benchmarks/bench_server.py --seconds 5       # quick look
    python benchmarks/bench_server.py --device cuda     # the server's encoder and RND on a GPU
    python benchmarks/bench_server.py --steps 5         # what group completion adds to a GRPO step

With --steps, it plays whole GRPO steps instead: a rollout batch of --prompts x --n samples starts generating at
once, each sample finishes at a random time within --spread seconds and then posts its reward request; per step it
measures the tail from the last generation finishing to the last reward coming back (what the reward adds to the
step), and each request's time in the server, with samples scored on arrival (stream.group_timeout 0) and with
group completion (each prompt's group scored whole).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_reward import make_texts  # noqa: E402

MODES = {
    "hook (quality per sample)": {"extract": {"pattern": r"HYP:\s*(.+)"}},
    # On arrival: a steady load has no steps for groups to complete in (--steps measures group completion).
    "streaming novelty (embed + RND per sample)": {"extract": {"pattern": r"HYP:\s*(.+)"},
                                                   "stream": {"update_every": 64, "group_size": 8,
                                                              "group_timeout": 0}},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(settings: dict, folder: str) -> tuple[subprocess.Popen, str]:
    cfg = os.path.join(folder, "cfg.json")
    with open(cfg, "w") as fh:
        json.dump(settings, fh)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "openrlhf_novelty.cli", "serve", "--config", cfg, "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


async def engine(url: str, texts: list[str], concurrency: int, deadline: float, latencies: list, errors: list):
    """One vLLM engine: `concurrency` rollouts in flight, each posting its reward request as OpenRLHF does."""
    timeout = aiohttp.ClientTimeout(total=180)

    async def worker(w: int):
        i = w
        while time.perf_counter() < deadline:
            prompt = f"Task {i % 64}: propose a hypothesis.\n"
            payload = {"query": [prompt + "HYP: " + texts[i % len(texts)]], "prompts": [prompt], "labels": [""]}
            start = time.perf_counter()
            try:
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    async with session.post(url + "/reward", json=payload) as response:
                        response.raise_for_status()
                        out = await response.json()
                        if len(out["rewards"]) != 1:
                            raise ValueError("wrong number of rewards")
                latencies.append(time.perf_counter() - start)
            except Exception as e:  # counted, never retried: we want to see them
                errors.append(repr(e))
            i += concurrency

    await asyncio.gather(*(worker(w) for w in range(concurrency)))


async def load(url: str, engines: int, concurrency: int, seconds: float) -> dict:
    texts = make_texts(4096, 0)
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    await asyncio.gather(*(engine(url, texts, concurrency, start + seconds, latencies, errors)
                           for _ in range(engines)))
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {"requests": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else "",
            "rps": len(latencies) / elapsed, "p50_ms": 1000 * q[49], "p99_ms": 1000 * q[98]}


async def post(session: aiohttp.ClientSession, url: str, prompt: str, text: str) -> None:
    payload = {"query": [prompt + text], "prompts": [prompt], "labels": [""]}
    async with session.post(url + "/reward", json=payload) as response:
        response.raise_for_status()
        if len((await response.json())["rewards"]) != 1:
            raise ValueError("wrong number of rewards")


async def steps(url: str, prompts: int, n: int, spread: float, count: int) -> dict:
    """``count`` GRPO steps; per step the reward tail after the last generation, and every request's wait."""
    texts, rng = make_texts(prompts * n * count, 1), random.Random(0)
    tails, waits, errors = [], [], []
    timeout = aiohttp.ClientTimeout(total=180)
    for step in range(count):
        finish = [rng.uniform(0, spread) for _ in range(prompts * n)]  # when each sample's generation ends
        start = time.perf_counter()

        async def one(i: int, finish=finish, step=step, start=start) -> float:  # this step's
            await asyncio.sleep(finish[i])
            sent = time.perf_counter()
            try:
                async with aiohttp.ClientSession(timeout=timeout) as session:  # OpenRLHF: a session per request
                    await post(session, url, f"Step {step}, task {i // n}: propose a hypothesis.\n",
                               texts[step * prompts * n + i])
            except Exception as e:
                errors.append(repr(e))
            back = time.perf_counter()
            waits.append(back - sent)
            return back - start

        done = await asyncio.gather(*(one(i) for i in range(prompts * n)))
        tails.append(max(done) - max(finish))
    q = statistics.quantiles(waits, n=100)
    return {"errors": len(errors), "tail_mean_s": statistics.mean(tails), "tail_max_s": max(tails),
            "wait_p50_s": q[49], "wait_p99_s": q[98], "wait_max_s": max(waits)}


def main_steps(args) -> int:
    per_step = args.prompts * args.n
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.steps} steps of "
          f"{args.prompts} prompts x {args.n} samples, generations ending uniformly within {args.spread:g} s")
    print(f"{'scoring':<40} {'errors':>6} {'tail mean s':>11} {'tail max s':>10} {'wait p50':>9} {'wait p99':>9} "
          f"{'wait max':>9}")
    failed = False
    with tempfile.TemporaryDirectory() as folder:
        for name, timeout in (("on arrival (group_timeout 0)", 0), ("group completion (group_timeout 60)", 60)):
            settings = {"extract": {"pattern": r"HYP:\s*(.+)"}, "embed": {"device": args.device},
                        "stream": {"update_every": per_step, "group_size": args.n, "group_timeout": timeout}}
            proc, url = start_server(settings, folder)
            try:
                asyncio.run(steps(url, 4, args.n, 0.5, 1))  # warm-up: the model loads on the first request
                r = asyncio.run(steps(url, args.prompts, args.n, args.spread, args.steps))
            finally:
                proc.terminate()
                proc.wait(30)
            print(f"{name:<40} {r['errors']:>6} {r['tail_mean_s']:>11.2f} {r['tail_max_s']:>10.2f} "
                  f"{r['wait_p50_s']:>9.2f} {r['wait_p99_s']:>9.2f} {r['wait_max_s']:>9.2f}", flush=True)
            failed |= r["errors"] > 0
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight per engine")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--device", default="cpu", help="the server's embed.device (cuda: the encoder and RND on a GPU)")
    ap.add_argument("--steps", type=int, default=0, help="play this many GRPO steps instead of a steady load")
    ap.add_argument("--prompts", type=int, default=32, help="--steps: prompts per rollout batch")
    ap.add_argument("--n", type=int, default=8, help="--steps: samples per prompt")
    ap.add_argument("--spread", type=float, default=10.0, help="--steps: generations end within this many seconds")
    args = ap.parse_args()
    if args.steps:
        return main_steps(args)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.engines} engines x "
          f"{args.concurrency} in flight, {args.seconds:.0f} s per mode")
    print(f"{'mode':<45} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    failed = False
    with tempfile.TemporaryDirectory() as folder:
        for name, settings in MODES.items():
            proc, url = start_server({**settings, "embed": {"device": args.device}}, folder)
            try:
                r = asyncio.run(load(url, args.engines, args.concurrency, args.seconds))
            finally:
                proc.terminate()
                proc.wait(30)
            print(f"{name:<45} {r['requests']:>9} {r['errors']:>7} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} "
                  f"{r['p99_ms']:>8.1f}" + (f"  first error: {r['first_error']}" if r["errors"] else ""), flush=True)
            failed |= r["errors"] > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
