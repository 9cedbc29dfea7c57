"""OpenRLHF's per-sample reward protocol: what ``--reward.remote_url`` (a reward file or our server) answers.

OpenRLHF calls the reward once per generated sample, from a thread pool, while generation is still running. So this
computes the quality side (format, judge, your own task reward) per sample and, only in streaming mode
(``stream.update_every > 0``, for runs without the experience-maker hook), adds novelty from ``stream.py``. It never
raises: any failure gives reward 0 with ``novelty/error = 1`` and ``novelty/masked = 1``, counted and logged.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time

import torch

from openrlhf_novelty.bounded import worth_logging
from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.reward import PREFIX, NoveltyReward, gate_log_keys, novelty_terms, quality_checks
from openrlhf_novelty.stream import StreamingNovelty
from openrlhf_novelty.text import response_from_query

logger = logging.getLogger(__name__)


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


def quality_log_keys(cfg: NoveltyConfig, judge: bool | None = None) -> list[str]:
    """The extra_logs keys of the quality side, fixed by the config (OpenRLHF raises if they differ between
    samples). The hook compares them with what reached it: a reward file running another config shows here."""
    keys = ["quality"]
    if cfg.extract_pattern and cfg.reward_format_weight > 0:
        keys.append("format")
    if (cfg.judge_enabled if judge is None else judge) and cfg.reward_soundness_weight > 0:
        keys += ["soundness", "judge_failed"]
    if cfg.reward_task_func and cfg.reward_task_weight > 0:
        keys.append("task")
    keys += quality_checks(cfg)
    return [PREFIX + k for k in keys + ["config", "masked", "error"]]


def log_keys(cfg: NoveltyConfig, judge: bool | None = None) -> list[str]:
    """Every extra_logs key under this config, streaming terms included: a reward file that cannot even start
    must log these too, or OpenRLHF's batch split fails on keys some samples lack."""
    keys = quality_log_keys(cfg, judge)
    if cfg.stream_update_every > 0:
        grouped = ["group_complete"] if cfg.stream_group_timeout > 0 else []
        keys[-2:-2] = [PREFIX + k for k in novelty_terms(cfg) + gate_log_keys(cfg) + grouped]
    return keys


class RemoteReward:
    """One per process: the reward file keeps one per vLLM engine, the server one for all engines."""

    def __init__(self, config: NoveltyConfig | None = None, model: NoveltyReward | None = None):
        self.config = cfg = config or NoveltyConfig()
        self.model = model or NoveltyReward(cfg)
        self.task_func = load_reward_func(cfg.reward_task_func) if cfg.reward_task_func else None
        self.streaming = cfg.stream_update_every > 0
        self.stream = StreamingNovelty(cfg, self.model) if self.streaming else None
        self._lock = threading.Lock()
        self.calls = self.errors = 0
        self.log_keys = self._log_keys()

    def _log_keys(self) -> list[str]:
        return log_keys(self.config, judge=self.model.judge is not None)

    def __call__(self, queries: list[str], prompts: list[str], labels: list | None = None) -> dict:
        """OpenRLHF's contract: lists in, ``{"rewards": [..], "scores": [..], "extra_logs": {k: [..]}}`` out."""
        arrived = time.monotonic()  # a request waiting for its group stays inside OpenRLHF's request limit
        n = len(queries)
        labels = list(labels) if labels is not None else [""] * n
        try:
            if len(prompts) != n or len(labels) != n:
                raise ValueError(f"got {n} queries, {len(prompts)} prompts and {len(labels)} labels")
            result = self._score(list(queries), list(prompts), labels, arrived)
        except Exception as e:  # the reward must never take a training step down
            with self._lock:
                self.errors += 1
                errors = self.errors
            if worth_logging(errors):
                logger.warning("novelty reward failed (%d so far), returning 0: %s: %s", errors, type(e).__name__, e,
                               exc_info=errors <= 3)
            logs = {k: [0.0] * n for k in self.log_keys}
            logs[PREFIX + "error"] = logs[PREFIX + "masked"] = [1.0] * n  # no quality is known for these
            result = {"rewards": [0.0] * n, "scores": [0.0] * n, "extra_logs": logs}
        with self._lock:
            self.calls += n
        return result

    def _score(self, queries: list[str], prompts: list[str], labels: list, arrived: float) -> dict:
        cfg = self.config
        responses = [response_from_query(q, p) for q, p in zip(queries, prompts)]
        task = as_floats(self.task_func(queries, prompts, labels), len(queries)) if self.task_func else None
        quality, parts = self.model.quality(prompts, responses, task)
        masked = [q is None for q in quality]
        q = [0.0 if v is None else v for v in quality]
        comps = {"quality": q, **parts}
        rewards = [cfg.reward_quality_weight * v for v in q]
        if self.streaming:
            rewards, novelty = self.stream(prompts, responses, quality, labels, arrived)
            comps.update(novelty)
        comps["config"] = [cfg.fingerprint()] * len(queries)
        comps["masked"] = [float(m) for m in masked]
        comps["error"] = [0.0] * len(queries)
        logs = {k: [float(x) for x in comps[k[len(PREFIX):]]] for k in self.log_keys}
        # scores carry quality, so OpenRLHF's dynamic filtering keeps filtering on quality, not on novelty.
        return {"rewards": [float(r) for r in rewards], "scores": q, "extra_logs": logs}

    def state_dict(self) -> dict:
        """The model's state plus, in streaming mode, the streaming memory (samples not yet learned from, siblings)."""
        if self.stream is not None:  # one snapshot under the stream's lock: an update in between would lose K samples
            return self.stream.state_dict(with_model=True)
        return {"model": self.model.state_dict(), "pending": torch.zeros(0, self.model.rnd.dim),
                "pending_keys": torch.zeros(0, dtype=torch.int64), "sibling_keys": torch.zeros(0, dtype=torch.int64),
                "siblings": []}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.stream is not None:
            self.stream.load_state_dict(state)

    def stats(self) -> dict[str, float]:
        out = {"calls": float(self.calls), "errors": float(self.errors), "step": float(self.model.step)}
        if self.model.judge is not None:
            out["judge_failure_rate"] = self.model.judge.stats.failure_rate
        if self.stream is not None and self.config.stream_group_timeout > 0:
            out["groups_complete"] = float(self.stream.groups_complete)
            out["groups_timed_out"] = float(self.stream.groups_timed_out)
        return out
