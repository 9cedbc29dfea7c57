"""TRL adapter: ``NoveltyRewardFunc`` is a reward function for ``trl.GRPOTrainer``, its ``callback`` updates RND.

    novelty = NoveltyRewardFunc(config, task_funcs=[my_accuracy])      # task_funcs: your own TRL reward functions
    trainer = GRPOTrainer(model, reward_funcs=[novelty], callbacks=[novelty.callback], args=GRPOConfig(...))

TRL calls a reward function once per generation batch with every completion of it (each prompt's
``num_generations`` completions contiguous), so the whole formula runs here: quality (format, judge, the task
functions) gates novelty (RND, group diversity, archive, bank), and the function returns the whole reward; use it as
the only entry of ``reward_funcs``. The callback learns from the scored batch once per optimizer step (at
``on_step_end``, after the policy update; evaluation batches are scored but never learned from), reads the group size
from ``GRPOConfig``, saves the novelty state into every TRL checkpoint and restores it on resume.

Several processes: each judges its own completions, then all of them are gathered (a group may straddle two
processes), every process scores the whole batch identically and keeps its own slice; RND updates are seeded, so
every process's copy stays identical without any further communication.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence

from transformers import TrainerCallback

from openrlhf_novelty.config import ConfigError, NoveltyConfig
from openrlhf_novelty.reward import NoveltyReward, ScoredBatch

logger = logging.getLogger(__name__)

STATE_FILE = "novelty_state.pt"
LOGGED = ("quality", "novelty", "gate", "rnd", "diversity", "archive", "bank", "format", "soundness", "task",
          "relevance", "nondegenerate", "shared", "judge_failed", "partition_failed")


def as_text(x) -> str:
    """A TRL prompt or completion as text: a string (standard format), or the last message's text (conversational)."""
    if isinstance(x, str):
        return x
    if isinstance(x, list) and x and isinstance(x[-1], dict):
        content = x[-1].get("content", "")
        if isinstance(content, list):  # content parts: keep the text ones
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else str(content)
    return "" if x is None else str(x)


def gather_across_processes(local: list) -> tuple[list, int]:
    """Every process's items in rank order (TRL's order: groups are contiguous in it), and where ours start."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes == 1:
        return local, 0
    from accelerate.utils import gather_object

    sizes = gather_object([len(local)])
    return gather_object(local), sum(sizes[: state.process_index])


class NoveltyRewardFunc:
    """The whole reward (quality + gated novelty) per completion, as a TRL reward function. Never raises once
    configured: a failing part falls back (quality-only reward, or quality 0 for a failing task function), is
    counted in ``failures`` and logged."""

    __name__ = "novelty"  # TRL names the reward column after it: rewards/novelty/mean

    def __init__(self, config: NoveltyConfig | None = None, task_funcs: Sequence[Callable] = (),
                 model: NoveltyReward | None = None, gather: Callable[[list], tuple[list, int]] | None = None):
        self.model = model or NoveltyReward(config)
        self.config = self.model.config
        for f in task_funcs:
            if not callable(f):
                raise ConfigError(f"task_funcs: {f!r} is not callable (pass TRL reward functions)")
        if task_funcs and self.config.reward_task_weight <= 0:
            raise ConfigError("task_funcs given but config reward.task_weight is 0: they would be ignored")
        self.task_funcs = list(task_funcs)
        self.gather = gather or gather_across_processes
        self.num_generations: int | None = None  # train group size; set by the callback from GRPOConfig
        self.num_generations_eval: int | None = None
        self.training = False  # True between on_step_begin and on_step_end: this batch is learned from
        # Every training batch scored since the last optimizer step: TRL may score several per step
        # (steps_per_generation < gradient_accumulation_steps), and RND / the archive must see them all.
        self.pending: list[ScoredBatch] = []
        self.failures = 0
        self.updates = 0
        self.callback = NoveltyCallback(self)
        self._log_metric: Callable | None = None

    # -- the reward function TRL calls
    def __call__(self, prompts: list, completions: list, completion_ids=None, log_metric=None, log_extra=None,
                 **kwargs) -> list[float]:
        if self.num_generations is None:
            raise ConfigError("NoveltyRewardFunc needs its callback: GRPOTrainer(..., callbacks=[novelty.callback])")
        self._log_metric = log_metric
        prompt_texts = [as_text(p) for p in prompts]
        responses = [as_text(c) for c in completions]
        task = self._task_rewards(prompts, completions, completion_ids, kwargs)
        try:
            quality, parts = self.model.quality(prompt_texts, responses, task)
        except Exception:
            self._failed("quality")
            quality, parts = [None] * len(responses), {}
        # Gathered unconditionally: a process that skipped the collective would hang every other one.
        everything, offset = self.gather(list(zip(prompt_texts, responses, quality)))
        n = self.num_generations if self.training else (self.num_generations_eval or self.num_generations)
        mine = slice(offset, offset + len(responses))
        try:
            all_prompts, all_responses, all_quality = (list(col) for col in zip(*everything))
            scored = self.model.score(all_prompts, all_responses, n, quality=all_quality)
            rewards = scored.rewards[mine]
            components = {k: v[mine] for k, v in scored.components.items()}
            if self.training:
                self.pending.append(scored)
        except Exception:
            self._failed("novelty")
            w = self.config.reward_quality_weight
            rewards = [w * q if q is not None and math.isfinite(q) else 0.0 for q in quality]
            components = {"quality": [q if q is not None else 0.0 for q in quality]}
        components.update(parts)
        if log_metric is not None:
            for k in LOGGED:
                if k in components and components[k]:
                    log_metric(f"novelty/{k}", sum(components[k]) / len(components[k]))
            log_metric("novelty/failures", float(self.failures))
        if log_extra is not None:
            for k in ("quality", "novelty"):
                if k in components:
                    log_extra(f"novelty/{k}", components[k])
        return [float(r) if math.isfinite(r) else 0.0 for r in rewards]

    def _task_rewards(self, prompts, completions, completion_ids, kwargs) -> list[float] | None:
        """Sum of the task functions' rewards per completion (None / NaN count 0), or None without any."""
        if not self.task_funcs:
            return None
        total = [0.0] * len(completions)
        for f in self.task_funcs:
            try:
                out = f(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
                if len(out) != len(completions):
                    raise ValueError(f"{len(out)} rewards for {len(completions)} completions")
                values = [float(v) if v is not None else 0.0 for v in out]  # all or nothing: no partial sums
            except Exception:
                self._failed(f"task function {getattr(f, '__name__', f)!r}")
                continue
            total = [t + (v if math.isfinite(v) else 0.0) for t, v in zip(total, values)]
        return total

    def _failed(self, what: str) -> None:
        self.failures += 1
        logger.exception("novelty reward: %s failed (failure %d); falling back for this batch", what, self.failures)

    # -- what the callback drives
    def update(self) -> None:
        """Learn from every training batch scored since the last step (one RND step, archive); a no-op without."""
        if not self.pending:
            return
        scored, self.pending = self.pending, []
        try:
            stats = self.model.update(scored)
        except Exception:
            self._failed("update")
            return
        self.updates += 1
        if self._log_metric is not None:
            for k, v in stats.items():
                self._log_metric(f"novelty/{k}", float(v))

    def save(self, path: str) -> bool:
        """Save the novelty state; a failure is logged and counted, never raised (``NoveltyReward.try_save``)."""
        saved = self.model.try_save(path)
        self.failures += not saved
        return saved

    def load(self, path: str) -> None:
        self.model.load(path)


class NoveltyCallback(TrainerCallback):
    """Drives a NoveltyRewardFunc: group size from GRPOConfig, one RND update per optimizer step, state in checkpoints."""

    def __init__(self, reward: NoveltyRewardFunc):
        self.reward = reward
        self._resume_checked = False

    def on_train_begin(self, args, state, control, **kwargs):
        n = getattr(args, "num_generations", None)
        if not isinstance(n, int) or n < 1:
            raise ConfigError("NoveltyCallback: the trainer's args have no num_generations (use trl.GRPOConfig)")
        self.reward.num_generations = n
        self.reward.num_generations_eval = getattr(args, "num_generations_eval", None) or n

    def on_step_begin(self, args, state, control, **kwargs):
        if not self._resume_checked:
            self._resume_checked = True
            self._maybe_resume(args, state)
        self.reward.training = True

    def on_step_end(self, args, state, control, **kwargs):
        self.reward.training = False
        self.reward.update()

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            os.makedirs(folder, exist_ok=True)
            self.reward.save(os.path.join(folder, STATE_FILE))

    def _maybe_resume(self, args, state) -> None:
        """A resumed run starts at the checkpoint's global_step (set only after on_train_begin): load its state."""
        if state.global_step == 0 or self.reward.model.step > 0:
            return
        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_FILE)
        if os.path.exists(path):
            self.reward.load(path)
            logger.info("novelty state restored from %s (novelty step %d)", path, self.reward.model.step)
        else:
            logger.warning("resumed at step %d but %s does not exist: novelty (RND, archive) starts fresh",
                           state.global_step, path)
