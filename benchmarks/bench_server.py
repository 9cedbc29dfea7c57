"""The reward server under OpenRLHF's load: 16 vLLM engines x 32 requests in flight, one sample per request.

`openrlhf-novelty serve` runs in its own process; this process plays the engines with OpenRLHF's client pattern
(aiohttp, a new session per request, one query per request) for --seconds, and reports errors, requests/s and latency
percentiles, for the hook setup (the server returns per-sample quality: format here) and for streaming novelty
(the server also embeds each sample and updates RND every 64).

    python benchmarks/bench_server.py                   # 60 s per mode
    python benchmarks/bench_server.py --seconds 5       # quick look
    python benchmarks/bench_server.py --device cuda     # the server's encoder and RND on a GPU
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
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
    "streaming novelty (embed + RND per sample)": {"extract": {"pattern": r"HYP:\s*(.+)"},
                                                   "stream": {"update_every": 64, "group_size": 8}},
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight per engine")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--device", default="cpu", help="the server's embed.device (cuda: the encoder and RND on a GPU)")
    args = ap.parse_args()
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
