"""The experience-maker hook: novelty for a whole rollout batch, before advantages, RND updated once per step.

OpenRLHF's ``RemoteExperienceMaker.make_experience_batch(rollout_samples)`` is the one place a whole rollout batch
is visible: one ``Experience`` per sample, each prompt's n samples contiguous. There, before anything else runs, we
decode the responses, score novelty for every sample (RND before updating, diversity inside each group), add the
quality-gated bonus to ``rewards`` (or, i-MENTOR style, to the advantages after group normalization), write every
component into ``info`` (logged as train/novelty/*), and update RND once. Quality is what the reward file already
put in ``scores``. Evaluation rollouts never pass through here.
"""

from __future__ import annotations

import logging
import os

import torch

from openrlhf_novelty.config import ConfigError, NoveltyConfig
from openrlhf_novelty.remote import PREFIX
from openrlhf_novelty.reward import NoveltyReward, task_to_unit

logger = logging.getLogger(__name__)

STATE_FILE = "novelty_state.pt"


class NoveltyHook:
    """Host-independent part of the hook: samples in, rewards / info / bonus out."""

    def __init__(self, config: NoveltyConfig, tokenizer, n_samples_per_prompt: int, model: NoveltyReward | None = None):
        if config.stream_update_every > 0:
            raise ConfigError("config stream.update_every: must be 0 with the experience-maker hook (the reward file "
                              "would add novelty a second time)")
        # The hook never asks the judge: quality arrives in `scores` from the reward file.
        self.config = config.replace(judge_base_url="", judge_local_path="")
        self.model = model or NoveltyReward(self.config)
        self.tokenizer, self.n = tokenizer, n_samples_per_prompt
        self.bonus: torch.Tensor | None = None  # per original sample index, for the advantage mode
        self.last_stats: dict[str, float] = {}
        self.failures = 0

    def responses(self, samples) -> list[str]:
        out = []
        for s in samples:
            tokens = s.sequences[0, 1:][s.action_mask[0].bool()] if s.action_mask is not None else s.sequences[0]
            out.append(self.tokenizer.decode(tokens.tolist(), skip_special_tokens=True))
        return out

    def quality(self, samples) -> list[float | None]:
        """Quality per sample: `scores` (the reward file's quality) else `rewards`, rescaled by reward.task_clip."""
        out: list[float | None] = []
        for s in samples:
            masked = s.info.get(PREFIX + "masked") if isinstance(s.info, dict) else None
            if masked is not None and float(torch.as_tensor(masked).flatten()[0]) > 0:
                out.append(None)
                continue
            value = s.scores if s.scores is not None else s.rewards
            v = float(torch.as_tensor(value).float().flatten()[0]) if value is not None else float("nan")
            out.append(task_to_unit(self.config, v) if v == v else None)
        return out

    def apply(self, samples) -> None:
        """Score the batch, write rewards / info (or keep the bonus for the advantages), update RND once.

        Never raises: OpenRLHF would kill the step. On failure the batch trains on its quality reward alone (bonus
        0, no RND update), ``novelty/error`` is 1 on every sample, and it is counted and logged."""
        if not samples:
            return
        logged = self.model.novelty_terms() + ["novelty", "gate"]  # fixed by the config, failure or not
        try:
            if len(samples) % self.n:
                raise ValueError(f"{len(samples)} rollout samples do not split into groups of {self.n}")
            prompts = [s.prompts[0] for s in samples]
            quality = self.quality(samples)
            scored = self.model.score(prompts, self.responses(samples), self.n, quality=quality)
            c = scored.components
            # The gated novelty bonus is the formula's reward minus its quality term.
            bonus = [r - self.config.reward_quality_weight * q for r, q in zip(c["reward"], c["quality"])]
            error = 0.0
        except Exception:
            self.failures += 1
            logger.exception("novelty hook failed on a batch of %d samples (failure %d): this batch gets no "
                             "novelty bonus and RND is not updated", len(samples), self.failures)
            scored, c, bonus, error = None, {}, [0.0] * len(samples), 1.0
        for i, s in enumerate(samples):
            for k in logged:
                s.info[PREFIX + k] = torch.tensor([c[k][i] if k in c else 0.0], dtype=torch.float32)
            s.info[PREFIX + "bonus"] = torch.tensor([bonus[i]], dtype=torch.float32)
            s.info[PREFIX + "error"] = torch.tensor([error], dtype=torch.float32)
            if self.config.hook_bonus_to == "reward":
                base = s.rewards.float().flatten()[:1] if s.rewards is not None else torch.zeros(1)
                s.rewards = base + bonus[i]
                s.info["reward"] = s.rewards.clone()
        self.bonus = torch.tensor(bonus, dtype=torch.float32) if self.config.hook_bonus_to == "advantage" else None
        stats = {}
        if scored is not None:
            try:
                stats = self.model.update(scored)
            except Exception:
                self.failures += 1
                logger.exception("novelty hook: RND / archive update failed (failure %d)", self.failures)
        self.last_stats = {f"{PREFIX}{k}": float(v) for k, v in stats.items()}
        self.last_stats[PREFIX + "step"] = float(self.model.step)
        self.last_stats[PREFIX + "bonus_mean"] = sum(bonus) / len(bonus)
        self.last_stats[PREFIX + "failures"] = float(self.failures)

    def save(self, path: str) -> bool:
        """Save the novelty state; a failure is logged and counted, never raised (``NoveltyReward.try_save``)."""
        saved = self.model.try_save(path)
        self.failures += not saved
        return saved

    def add_bonus_to_advantages(self, experiences) -> None:
        """Advantage mode: add each sample's bonus to its (already group-normalized) advantages on action tokens."""
        if self.bonus is None:
            return
        for exp in experiences:
            idx = torch.as_tensor(exp.index, dtype=torch.long)
            b = self.bonus[idx].to(exp.advantages.dtype).to(exp.advantages.device)
            exp.advantages = exp.advantages + b[:, None] * exp.action_mask.to(exp.advantages.dtype)
        self.bonus = None


def novelty_experience_maker(base):
    """A subclass of OpenRLHF's experience maker with the hook in front (``base`` = RemoteExperienceMaker)."""

    class NoveltyExperienceMaker(base):
        novelty: NoveltyHook

        def make_experience_batch(self, rollout_samples):
            self.novelty.apply(rollout_samples)
            return super().make_experience_batch(rollout_samples)

        def compute_advantages_and_returns(self, experiences):
            experiences = super().compute_advantages_and_returns(experiences)
            self.novelty.add_bonus_to_advantages(experiences)
            return experiences

    return NoveltyExperienceMaker


def novelty_trainer(base, config_dict: dict):
    """A subclass of OpenRLHF's PPOTrainer (the plain class, ``PPOTrainer.__ray_actor_class__``) using the hook.

    ``config_dict`` travels inside the class to the Ray actor, on any node.
    """

    class NoveltyPPOTrainer(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.install_novelty()

        def install_novelty(self):
            """Swap in the hooked experience maker and restore the novelty state of a resumed run."""
            config = NoveltyConfig.from_dict(config_dict)
            maker_cls = novelty_experience_maker(type(self.experience_maker))
            self.experience_maker = maker_cls(
                self.actor_model_group, self.critic_model_group, self.reward_model_group,
                self.reference_model_group, self.kl_ctl, self.strategy, self.tokenizer,
            )
            self.experience_maker.novelty = NoveltyHook(config, self.tokenizer, self.args.rollout.n_samples_per_prompt)
            path = os.path.join(self.args.ckpt.path, STATE_FILE)
            if self.args.ckpt.load_enable and os.path.exists(path):
                self.experience_maker.novelty.model.load(path)
                logger.info("novelty state restored from %s (step %d)", path, self.experience_maker.novelty.model.step)

        def train_step(self, rollout_samples, global_step):
            status, global_step = super().train_step(rollout_samples, global_step)
            status.update(self.experience_maker.novelty.last_stats)
            return status, global_step

        def save_logs_and_checkpoints(self, global_step, logs_dict=None, client_states=None):
            super().save_logs_and_checkpoints(global_step, logs_dict, client_states)
            if global_step % self.args.ckpt.save_steps == 0:
                self.experience_maker.novelty.save(os.path.join(self.args.ckpt.path, STATE_FILE))

    return NoveltyPPOTrainer
