"""The per-sample side of OpenRLHF: what ``--reward.remote_url`` (a reward file or our server) answers per sample.

OpenRLHF calls the reward once per generated sample, from a thread pool, while generation is still running. So this
computes the quality side (format, judge, your own task reward) per sample and, only in streaming mode
(``stream.update_every > 0``, for runs without the experience-maker hook), novelty against shared state: RND scored
per sample and updated every K samples, diversity against the prompt's recently seen samples. It never raises:
any failure gives reward 0 with ``novelty/error = 1`` and is counted and logged.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections import OrderedDict, deque

import torch

from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.diversity import prompt_key
from openrlhf_novelty.reward import NoveltyReward, ScoredBatch, reward_formula
from openrlhf_novelty.text import response_from_query

logger = logging.getLogger(__name__)

PREFIX = "novelty/"  # OpenRLHF logs every extra_logs key as train/<key>; ours must not collide with its own


def load_reward_func(path: str):
    """Load ``reward_func`` from a Python file exactly as OpenRLHF does (spec_from_file_location, no sys.modules)."""
    spec = importlib.util.spec_from_file_location("novelty_task_reward_func", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "reward_func", None)):
        raise ValueError(f"{path} defines no reward_func(queries, prompts, labels)")
    return module.reward_func


def as_floats(value, n: int) -> list[float]:
    """A user's reward output (dict with 'rewards', tensor, list or number) as n floats."""
    if isinstance(value, dict):
        value = value.get("rewards")
    if isinstance(value, torch.Tensor):
        value = value.detach().float().flatten().tolist()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    out = [float(v) for v in value]
    if len(out) != n:
        raise ValueError(f"task reward_func returned {len(out)} rewards for {n} samples")
    return out


class Batcher:
    """Runs ``fn`` on the items of concurrent ``submit`` calls together (leader / followers, no extra thread).

    OpenRLHF sends one sample per request from hundreds of rollouts at once; encoding them one by one costs ~10x
    encoding them as a batch. The first caller to find no batch running becomes the leader: it takes everything
    queued (its own item included), runs ``fn`` once on the list, hands each caller its result, and repeats while
    more arrived meanwhile. ``fn`` maps a list of items to a list of results, one each, in order.
    """

    def __init__(self, fn, max_items: int = 256):
        self.fn, self.max_items = fn, max_items
        self._cond = threading.Condition()
        self._queue: list[list] = []  # [item, result, done, error]
        self._leader = False

    def submit(self, item):
        slot = [item, None, False, None]
        with self._cond:
            self._queue.append(slot)
            while not slot[2] and self._leader:
                self._cond.wait()
            if slot[2]:
                return self._result(slot)
            self._leader = True
        try:
            while True:
                with self._cond:
                    batch, self._queue = self._queue[:self.max_items], self._queue[self.max_items:]
                if not batch:
                    break
                try:
                    results = self.fn([s[0] for s in batch])
                    for s, r in zip(batch, results):
                        s[1] = r
                except Exception as e:  # every caller of this batch sees the error (each falls back on its own)
                    for s in batch:
                        s[3] = e
                with self._cond:
                    for s in batch:
                        s[2] = True
                    self._cond.notify_all()
                if slot[2] and not self._queue:
                    break
        finally:
            with self._cond:
                self._leader = False
                self._cond.notify_all()  # a waiter whose item is still queued becomes the next leader
        return self._result(slot)

    @staticmethod
    def _result(slot):
        if slot[3] is not None:
            raise slot[3]
        return slot[1]


class RemoteReward:
    """One per process: the reward file keeps one per vLLM engine, the server one for all engines."""

    def __init__(self, config: NoveltyConfig | None = None, model: NoveltyReward | None = None):
        self.config = cfg = config or NoveltyConfig()
        self.model = model or NoveltyReward(cfg)
        self.task_func = load_reward_func(cfg.reward_task_func) if cfg.reward_task_func else None
        self.streaming = cfg.stream_update_every > 0
        self._siblings: OrderedDict[int, deque] = OrderedDict()
        self._pending: list[tuple[torch.Tensor, int]] = []
        self._lock = threading.Lock()
        self._batcher = Batcher(self._stream_batch)
        self.calls = self.errors = 0
        self.log_keys = self._log_keys()

    def _log_keys(self) -> list[str]:
        """The extra_logs keys, fixed by the config: OpenRLHF raises if they differ between samples."""
        cfg = self.config
        keys = ["quality"]
        if cfg.extract_pattern and cfg.reward_format_weight > 0:
            keys.append("format")
        if self.model.judge is not None and cfg.reward_soundness_weight > 0:
            keys += ["soundness", "judge_failed"]
        elif self.model.judge is not None:
            keys.append("judge_failed")
        if self.task_func is not None and cfg.reward_task_weight > 0:
            keys.append("task")
        if self.streaming:
            keys += self.model.novelty_terms() + ["novelty", "gate"]
        keys += ["masked", "error"]
        return [PREFIX + k for k in keys]

    def __call__(self, queries: list[str], prompts: list[str], labels: list | None = None) -> dict:
        """OpenRLHF's contract: lists in, ``{"rewards": [..], "scores": [..], "extra_logs": {k: [..]}}`` out."""
        n = len(queries)
        labels = list(labels) if labels is not None else [""] * n
        try:
            if len(prompts) != n or len(labels) != n:
                raise ValueError(f"got {n} queries, {len(prompts)} prompts and {len(labels)} labels")
            result = self._score(list(queries), list(prompts), labels)
        except Exception as e:  # the reward must never take a training step down
            with self._lock:
                self.errors += 1
                errors = self.errors
            if errors <= 10 or errors % 1000 == 0:
                logger.warning("novelty reward failed (%d so far), returning 0: %s: %s", errors, type(e).__name__, e,
                               exc_info=errors <= 3)
            logs = {k: [0.0] * n for k in self.log_keys}
            logs[PREFIX + "error"] = [1.0] * n
            result = {"rewards": [0.0] * n, "scores": [0.0] * n, "extra_logs": logs}
        with self._lock:
            self.calls += n
        return result

    def _score(self, queries: list[str], prompts: list[str], labels: list) -> dict:
        cfg = self.config
        responses = [response_from_query(q, p) for q, p in zip(queries, prompts)]
        task = as_floats(self.task_func(queries, prompts, labels), len(queries)) if self.task_func else None
        quality, parts = self.model.quality(prompts, responses, task)
        masked = [q is None for q in quality]
        q = [0.0 if v is None else v for v in quality]
        comps = {"quality": q, **parts}
        rewards = [cfg.reward_quality_weight * v for v in q]
        if self.streaming:
            rewards, novelty = self._stream(prompts, responses, quality)
            comps.update(novelty)
        comps["masked"] = [float(m) for m in masked]
        comps["error"] = [0.0] * len(queries)
        logs = {k: [float(x) for x in comps[k[len(PREFIX):]]] for k in self.log_keys}
        # scores carry quality, so OpenRLHF's dynamic filtering keeps filtering on quality, not on novelty.
        return {"rewards": [float(r) for r in rewards], "scores": q, "extra_logs": logs}

    def _stream(self, prompts: list[str], responses: list[str], quality: list[float | None]):
        """Hookless novelty for this request's samples, scored together with every other request waiting."""
        return self._batcher.submit((prompts, responses, quality))

    def _stream_batch(self, requests: list[tuple]) -> list[tuple]:
        """Score the samples of several concurrent requests in one pass (one encoder call), in arrival order."""
        prompts = [p for r in requests for p in r[0]]
        rewards, comps = self._stream_scored(prompts, [x for r in requests for x in r[1]],
                                             [q for r in requests for q in r[2]])
        out, start = [], 0
        for r in requests:
            end = start + len(r[0])
            out.append((rewards[start:end], {k: v[start:end] for k, v in comps.items()}))
            start = end
        return out

    def _stream_scored(self, prompts: list[str], responses: list[str], quality: list[float | None]):
        """Hookless novelty: the shared model scores each sample; siblings are the prompt's recent samples."""
        cfg = self.config
        with self._lock:
            scored = self.model.score(prompts, responses, 1, quality=quality)
            keys = [prompt_key(p) for p in prompts]
            emb = scored.embeddings.cpu()
            div = []
            for i, key in enumerate(keys):
                sibs = self._siblings.get(key)
                div.append(self._sibling_diversity(emb[i], sibs) if scored.valid[i] else 0.0)
                if scored.valid[i]:
                    if sibs is None:
                        sibs = self._siblings[key] = deque(maxlen=cfg.stream_group_size - 1)
                    sibs.append(emb[i])
                    self._siblings.move_to_end(key)
                    self._pending.append((emb[i], key))
            while len(self._siblings) > cfg.stream_max_prompts:
                self._siblings.popitem(last=False)
            c = scored.components
            terms = {k: torch.tensor(c[k], dtype=torch.float64) for k in ("rnd", "archive", "bank") if k in c}
            if cfg.diversity_weight > 0:
                terms["diversity"] = torch.tensor(div, dtype=torch.float64)
            mask = torch.tensor([v is None for v in quality])
            out = reward_formula(cfg, scored.step, torch.tensor(c["quality"], dtype=torch.float64), terms,
                                 mask if mask.any() else None)
            while len(self._pending) >= cfg.stream_update_every:  # every K samples, however they were batched
                self._update(cfg.stream_update_every)
        comps = {k: v.tolist() for k, v in terms.items()}
        comps.update(novelty=out["novelty"].tolist(), gate=out["gate"].tolist())
        return out["reward"].tolist(), comps

    def _sibling_diversity(self, e: torch.Tensor, sibs) -> float:
        if not sibs:
            return 0.0  # the first sample of a prompt has nothing to differ from (see the README's caveat)
        sims = torch.stack(list(sibs)) @ e
        mode = self.config.diversity_mode
        if mode == "partition":  # share of siblings that are a different answer (no transitive clustering here)
            return float((sims < self.config.diversity_threshold).float().mean())
        dist = (1.0 - sims).clamp(0.0, 1.0)
        return float(dist.min() if mode == "min" else dist.mean())

    def _update(self, k: int) -> None:
        """Learn from the first k pending samples."""
        learn, self._pending = self._pending[:k], self._pending[k:]
        emb = torch.stack([e for e, _ in learn])
        keys = torch.tensor([key for _, key in learn], dtype=torch.int64)
        self.model.update(ScoredBatch(rewards=[], components={}, step=self.model.step, embeddings=emb,
                                      prompt_keys=keys, valid=torch.ones(len(keys), dtype=torch.bool)))

    def state_dict(self) -> dict:
        """The model's state plus the streaming memory (samples not yet learned from, recent siblings)."""
        with self._lock:
            dim = self.model.rnd.dim
            return {
                "model": self.model.state_dict(),
                "pending": torch.stack([e for e, _ in self._pending]) if self._pending else torch.zeros(0, dim),
                "pending_keys": torch.tensor([k for _, k in self._pending], dtype=torch.int64),
                "sibling_keys": torch.tensor(list(self._siblings), dtype=torch.int64),
                "siblings": [torch.stack(list(d)) for d in self._siblings.values()],
            }

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            self.model.load_state_dict(state["model"])
            self._pending = list(zip(state["pending"], state["pending_keys"].tolist()))
            self._siblings = OrderedDict(
                (k, deque(list(e), maxlen=self.config.stream_group_size - 1))
                for k, e in zip(state["sibling_keys"].tolist(), state["siblings"]))

    def stats(self) -> dict[str, float]:
        out = {"calls": float(self.calls), "errors": float(self.errors), "step": float(self.model.step)}
        if self.model.judge is not None:
            out["judge_failure_rate"] = self.model.judge.stats.failure_rate
        return out
