"""The experience-maker hook where OpenRLHF runs it: inside a Ray actor declared like PPOTrainer (no num_cpus).

Ray starts such an actor with OMP_NUM_THREADS=1, so torch there runs on one core unless the hook asks for more
(``hook.threads``). For each response length (tokens, as math / story recipes produce) and rollout size (samples
per step), in one actor, in one run:
  bare  : SentenceTransformer.encode of the decoded responses on T threads (the floor: every term needs them;
          with embed.text prompt_free, of their prompt-free forms, which is what the hook encodes)
  hook  : NoveltyHook.apply on the same samples (decode, extract, encode, RND, group diversity, archive kNN at its
          cap, relevance, formula, one RND update), with hook.threads = T
for T = 1 (what the actor had before hook.threads) and T = the default (the cores this process may use, <= 16).

    python benchmarks/bench_hook.py                               # lengths 256,1024; sizes 256,1024,4096
    python benchmarks/bench_hook.py --sizes 256 --lengths 256     # quick look
    python benchmarks/bench_hook.py --device cuda --sizes 1024 --lengths 256 --threads 0   # embed.device cuda

--in-process runs the same measurement in this process, without Ray (a machine without it: the GPU check).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import threading
import time
from types import SimpleNamespace

import torch

N = 8  # samples per prompt (GRPO's n)
NAMES = ["Mara", "Tobias", "Ines", "Kofi", "Lena", "Ravi", "Oskar", "Yuki", "Amara", "Jonas"]
PLACES = ["the harbour", "an old library", "the night train", "a mountain village", "the lighthouse",
          "a crowded market", "the flooded mill", "a research station", "the empty stadium", "her aunt's bakery"]
THINGS = ["a brass key", "a torn map", "a silent radio", "a letter with no stamp", "a jar of seeds",
          "a cracked compass", "a photograph", "a borrowed violin", "a box of matches", "a notebook"]
VERBS = ["found", "hid", "carried", "repaired", "lost", "traded", "opened", "buried", "studied", "returned"]
FEELINGS = ["uneasy", "hopeful", "curious", "furious", "relieved", "homesick", "determined", "afraid"]


def story_sentence(rng: random.Random) -> str:
    return rng.choice([
        f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(THINGS)} near {rng.choice(PLACES)}.",
        f"It was {rng.randint(2, 11)} o'clock when {rng.choice(NAMES)} felt {rng.choice(FEELINGS)} for the first time.",
        f"Nobody at {rng.choice(PLACES)} remembered who had {rng.choice(VERBS)} {rng.choice(THINGS)}.",
        f"\"Why would anyone keep {rng.choice(THINGS)}?\" asked {rng.choice(NAMES)}, {rng.choice(FEELINGS)}.",
    ])


def math_sentence(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 999), rng.randint(2, 99), rng.randint(2, 50)
    return rng.choice([
        f"First, multiply {a} by {b} to get {a * b}.",
        f"Next, subtract {c} from {a * b}, which leaves {a * b - c}.",
        f"Since the train covers {b} km in {c} minutes, its speed is {b / c:.3f} km per minute.",
        f"Let x be the number of apples; then {b}x + {c} = {b * a + c}, so x = {a}.",
        f"Checking: {a} + {b} + {c} = {a + b + c}, which matches the total.",
    ])


def make_response(tokenizer, tokens: int, rng: random.Random, kind: str) -> str:
    """A response of about ``tokens`` tokens (the embedder's own tokenizer counts them)."""
    sentence = math_sentence if kind == "math" else story_sentence
    parts: list[str] = []
    while len(tokenizer(" ".join(parts), add_special_tokens=False)["input_ids"]) < tokens:
        parts.extend(sentence(rng) for _ in range(8))
    ids = tokenizer(" ".join(parts), add_special_tokens=False)["input_ids"][:tokens]
    return tokenizer.decode(ids)


class PeakRSS:
    """This process's peak resident memory while a block runs (sampled every 20 ms), and where it started."""

    def __init__(self):
        import psutil

        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._thread.join()
        return self.start / 2**20, max(self.peak, self._process.memory_info().rss) / 2**20


class HookBench:
    """Made a Ray actor as OpenRLHF declares PPOTrainer (no num_cpus, so Ray sets OMP_NUM_THREADS=1), or in-process."""

    def __init__(self, device: str = "cpu"):
        from transformers import AutoTokenizer

        from openrlhf_novelty.embed import resolve_model

        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
        self.device = device
        self.texts: dict[tuple[int, int, int], list[str]] = {}

    def environment(self) -> dict:
        return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
                "cores": len(os.sched_getaffinity(0))}

    def batch(self, size: int, tokens: int, seed: int):
        rng = random.Random(seed)
        prompts = [f"{'Solve' if i % 2 else 'Write a short story about'} problem {i}: "
                   f"{story_sentence(rng) if i % 2 == 0 else math_sentence(rng)}" for i in range(size // N)]
        samples, texts = [], []
        for i in range(size):
            text = make_response(self.tokenizer, tokens, rng, "math" if (i // N) % 2 else "story")
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            samples.append(SimpleNamespace(sequences=torch.tensor([[0, *ids]]), action_mask=torch.ones(1, len(ids)),
                                           prompts=[prompts[i // N]], rewards=torch.tensor([1.0]), scores=None,
                                           info={}))
            texts.append(text)
        return samples, texts

    def measure(self, size: int, tokens: int, threads: int, repeats: int = 1, overrides: tuple[str, ...] = ()) -> dict:
        from openrlhf_novelty.config import NoveltyConfig
        from openrlhf_novelty.hook import NoveltyHook, torch_threads

        config = NoveltyConfig.from_dict({"hook": {"threads": threads}, "embed": {"device": self.device}})
        config = config.with_overrides(list(overrides))
        hook = NoveltyHook(config, self.tokenizer, N)
        hook.apply(self.batch(16, tokens, seed=1)[0])  # loads the model (untimed)
        fill = torch.nn.functional.normalize(torch.randn(hook.config.archive_size, hook.model.embedder.dim), dim=-1)
        hook.model.archive.add(fill, torch.arange(hook.config.archive_size))  # the archive at its cap
        samples, texts = self.batch(size, tokens, seed=100 + size)
        decoded = hook.responses(samples)
        read = hook.model.extract_texts(decoded)[0]
        if config.embed_text == "prompt_free":  # what the hook encodes: the same chunks, so the same texts
            from openrlhf_novelty.checks import prompt_free

            read = [prompt_free(t, s.prompts[0]) for t, s in zip(read, samples)]
        bares, totals = [], []
        sync = torch.cuda.synchronize if self.device.startswith("cuda") else (lambda: None)  # GPU work is async
        for _ in range(repeats):  # alternating, median of each: this machine's noise is of the order of the gap
            with torch_threads(hook.threads):
                hook.model.embedder.encode(decoded[:16])  # the thread pool started outside the timing
                sync()
                t0 = time.perf_counter()
                hook.model.embedder.encode(read)  # not through the model's cache
                sync()
                bares.append(time.perf_counter() - t0)
            hook.model._emb_cache.clear()  # each repeat encodes the batch afresh, as a new step would
            memory = PeakRSS()
            t0 = time.perf_counter()
            hook.apply(samples)
            totals.append(time.perf_counter() - t0)
            rss_start, rss_peak = memory.stop()
        assert hook.failures == 0 and hook.model.step == 1 + repeats, "a timed batch failed"
        bare, total = statistics.median(bares), statistics.median(totals)
        return {"size": size, "tokens": tokens, "threads": hook.threads, "bare_s": bare, "hook_s": total,
                "repeats": repeats, "logged_hook_s": hook.last_stats["novelty/hook_seconds"], "ratio": total / bare,
                "samples_per_s": size / total, "rss_start_mib": rss_start, "rss_peak_mib": rss_peak,
                "overrides": list(overrides)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="256,1024,4096")
    ap.add_argument("--lengths", default="256,1024")
    ap.add_argument("--threads", default="1,0", help="hook.threads values; 0 = the default")
    ap.add_argument("--one-thread-up-to", type=int, default=1024,
                    help="sizes above this run with the default threads only (one thread is ~20 min at 4096)")
    ap.add_argument("--repeats", type=int, default=1, help="timings per row (median)")
    ap.add_argument("--json", default="", help="also write the rows here")
    ap.add_argument("--device", default="cpu", help="embed.device of the hook: cpu or cuda")
    ap.add_argument("--in-process", action="store_true", help="measure in this process, without Ray")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="config override for every row, e.g. quality.relevance_weight=0 (repeatable)")
    args = ap.parse_args()
    if args.in_process:
        bench = HookBench(args.device)
        call = lambda name, *a: getattr(bench, name)(*a)  # noqa: E731
    else:
        import ray

        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        actor = ray.remote(num_gpus=1 if args.device.startswith("cuda") else 0)(HookBench).remote(args.device)
        call = lambda name, *a: ray.get(getattr(actor, name).remote(*a))  # noqa: E731
    env = call("environment")
    where = "in this process" if args.in_process else "in the actor"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, embed.device "
          f"{args.device}; {where}: OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, torch threads {env['torch_threads']}, "
          f"{env['cores']} cores")
    print("| response tokens | samples | hook.threads | bare encode | hook (score + update) | ratio | samples/s | "
          "RSS at start / peak during the hook |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for tokens in map(int, args.lengths.split(",")):
        for size in map(int, args.sizes.split(",")):
            for threads in map(int, args.threads.split(",")):
                if threads == 1 and size > args.one_thread_up_to:
                    continue
                r = call("measure", size, tokens, threads, args.repeats, tuple(args.set))
                rows.append(r)
                print(f"| {tokens} | {size} | {r['threads']} | {r['bare_s']:.3g} s | {r['hook_s']:.3g} s | "
                      f"{r['ratio']:.3f} | {r['samples_per_s']:.1f} | {r['rss_start_mib']:.0f} / "
                      f"{r['rss_peak_mib']:.0f} MiB |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"environment": env, "device": args.device, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
