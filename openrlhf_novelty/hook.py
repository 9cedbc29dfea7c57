"""The experience-maker hook: novelty for a whole rollout batch, before advantages, RND updated once per step.

OpenRLHF's ``RemoteExperienceMaker.make_experience_batch(rollout_samples)`` is the one place a whole rollout batch
is visible: one ``Experience`` per sample, each prompt's n samples contiguous. There, before anything else runs, we
decode the responses, score novelty for every sample (RND before updating, diversity inside each group), add the
quality-gated bonus to ``rewards`` (or, i-MENTOR style, to the advantages after group normalization), write every
component into ``info`` (logged as train/novelty/*), and update RND once. Quality is what the reward file already
put in ``scores``. Evaluation rollouts never pass through here.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time

import numpy as np
import torch

from openrlhf_novelty.config import ConfigError, NoveltyConfig
from openrlhf_novelty.remote import quality_log_keys
from openrlhf_novelty.reward import PREFIX, NoveltyReward, gate_log_keys, task_to_unit
from openrlhf_novelty.reward_file import show_info_logs
from openrlhf_novelty.state import from_bytes, load_state, to_bytes

logger = logging.getLogger(__name__)

CLIENT_STATE_KEY = "novelty_state"  # our entry in the client_states of OpenRLHF's DeepSpeed checkpoints


def _first(value) -> float:
    """The one number OpenRLHF stores per sample (a tensor of shape [1], or a float); 0 when absent."""
    return float(torch.as_tensor(value).float().flatten()[0]) if value is not None else 0.0


def hook_threads(config: NoveltyConfig) -> int:
    """hook.threads, or (0) the cores this process may run on, at most 16: encoding speeds up little beyond that."""
    if config.hook_threads:
        return config.hook_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 16))


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to ``n`` inside, restored after. Ray starts an actor that declares no num_cpus
    (OpenRLHF's PPOTrainer) with OMP_NUM_THREADS=1; torch.set_num_threads overrides it for this process. While the
    hook scores, generation is over and the trainers wait for this batch, so the node's cores are free. OpenMP keeps
    the count per thread: it holds for work on this thread (the hook encodes on the calling thread: the embedder's
    Batcher leader is the caller) and threads started later, not for a pool that already ran torch."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class NoveltyHook:
    """Host-independent part of the hook: samples in, rewards / info / bonus out."""

    def __init__(self, config: NoveltyConfig, tokenizer, n_samples_per_prompt: int, model: NoveltyReward | None = None):
        if config.stream_update_every > 0:
            raise ConfigError("config stream.update_every: must be 0 with the experience-maker hook (the reward file "
                              "would add novelty a second time)")
        # The hook never asks the judge for soundness: quality arrives in `scores` from the reward file. It asks it
        # only to sort each group into classes (diversity.mode judge).
        self.config = config if config.diversity_mode == "judge" else config.replace(judge_base_url="",
                                                                                        judge_local_path="")
        self.model = model or NoveltyReward(self.config)
        self.tokenizer, self.n = tokenizer, n_samples_per_prompt
        # What our reward file / server, running this same config, puts in every sample's info.
        self.expected_keys = set(quality_log_keys(config))
        self.fingerprint = config.fingerprint()
        self.bonus: torch.Tensor | None = None  # per original sample index, for the advantage mode
        self.last_stats: dict[str, float] = {}
        self.failures = 0
        self.threads = hook_threads(config)
        logger.info("novelty hook: scoring on %d torch threads (hook.threads; this actor had %d)", self.threads,
                    torch.get_num_threads())

    def responses(self, samples) -> list[str]:
        out = []
        for s in samples:
            tokens = s.sequences[0, 1:][s.action_mask[0].bool()] if s.action_mask is not None else s.sequences[0]
            out.append(self.tokenizer.decode(tokens.tolist(), skip_special_tokens=True))
        return out

    def quality(self, samples) -> tuple[list[float | None], list[float]]:
        """(quality per sample, the reward file's error flag per sample). None = unknown: masked, no credit.

        From our reward file / server: its ``novelty/quality``, already in [0, 1] (reward.task_clip was applied
        there, once). From anything else (your own reward file, an agent): ``scores`` else ``rewards``, rescaled
        by reward.task_clip. A sample the reward file failed on (``novelty/error`` or ``novelty/masked``) is
        masked, never a real quality 0."""
        out: list[float | None] = []
        errors: list[float] = []
        for s in samples:
            info = s.info if isinstance(s.info, dict) else {}
            error = _first(info.get(PREFIX + "error"))
            errors.append(1.0 if error else 0.0)
            if error or _first(info.get(PREFIX + "masked")):
                out.append(None)
            elif PREFIX + "quality" in info:
                out.append(_first(info[PREFIX + "quality"]))
            else:
                value = s.scores if s.scores is not None else s.rewards
                v = _first(value) if value is not None else float("nan")
                out.append(task_to_unit(self.config, v) if v == v else None)
        return out, errors

    def check_reward_keys(self, samples) -> None:
        """Refuse a batch whose reward file / server ran another config (the path it was given never reached the
        vLLM engine, or the server was started with another file): quality would silently be something else."""
        info = samples[0].info if isinstance(samples[0].info, dict) else {}
        ours = {k for k in info if k.startswith(PREFIX)}
        fix = ("Point both at one file (--novelty.config ships it to every Ray worker; for `openrlhf-novelty serve` "
               "pass the same --config) and keep stream.update_every 0 there.")
        if PREFIX + "quality" in ours and ours != self.expected_keys:
            raise ConfigError(f"the reward file / server is running another novelty config than the hook: it logged "
                              f"{sorted(ours)}, this config gives {sorted(self.expected_keys)}. " + fix)
        # The same keys can come from different settings (another rubric, relevance ramp, judge): the fingerprint
        # tells, on a sample the reward file did score (a failed one carries 0).
        scored = [s.info for s in samples if isinstance(s.info, dict) and PREFIX + "config" in s.info
                  and not _first(s.info.get(PREFIX + "error"))]
        if scored and (theirs := _first(scored[0][PREFIX + "config"])) != self.fingerprint:
            raise ConfigError(f"the reward file / server is running another novelty config than the hook (config "
                              f"fingerprint {theirs:.0f} there, {self.fingerprint:.0f} here): the same log keys, "
                              "other settings. " + fix)

    def apply(self, samples) -> None:
        """Score the batch, write rewards / info (or keep the bonus for the advantages), update RND once.

        On failure the batch trains on its quality reward alone (bonus 0, no RND update), ``novelty/error`` is 1
        on every sample, and it is counted and logged. Only a config mismatch with the reward file (a start-up
        error: every step would be wrong) is raised."""
        if not samples:
            return
        self.check_reward_keys(samples)
        start = time.perf_counter()
        with torch_threads(self.threads):
            self._apply(samples)
        # On the critical path of every step (the GPUs wait for it): logged so a slow hook is seen, not guessed.
        self.last_stats[PREFIX + "hook_seconds"] = time.perf_counter() - start

    def _apply(self, samples) -> None:
        logged = self.model.novelty_terms() + gate_log_keys(self.config)  # fixed by the config, failure or not
        try:
            if len(samples) % self.n:
                raise ValueError(f"{len(samples)} rollout samples do not split into groups of {self.n}")
            if any(s.rewards is None for s in samples):
                raise ValueError("samples arrived without rewards: the hook needs --reward.remote_url")
            quality, file_errors = self.quality(samples)
            prompts = [s.prompts[0] for s in samples]
            scored = self.model.score(prompts, self.responses(samples), self.n, quality=quality)
            c, bonus = scored.components, scored.components["bonus"]
            errors = file_errors
        except Exception:
            self.failures += 1
            logger.exception("novelty hook failed on a batch of %d samples (failure %d): this batch gets no "
                             "novelty bonus and RND is not updated", len(samples), self.failures)
            scored, c, bonus, errors = None, {}, [0.0] * len(samples), [1.0] * len(samples)
        for i, s in enumerate(samples):
            for k in logged:
                s.info[PREFIX + k] = torch.tensor([c[k][i] if k in c else 0.0], dtype=torch.float32)
            s.info[PREFIX + "bonus"] = torch.tensor([bonus[i]], dtype=torch.float32)
            s.info[PREFIX + "error"] = torch.tensor([errors[i]], dtype=torch.float32)  # the reward file's, or ours
            if self.config.hook_bonus_to == "reward" and s.rewards is not None:
                # Quality from our reward file: the formula's own reward (w_q from this config, masked = 0);
                # from anything else: its reward plus the bonus.
                if scored is not None and PREFIX + "quality" in s.info:
                    s.rewards = torch.tensor([c["reward"][i]], dtype=torch.float32)
                else:
                    s.rewards = s.rewards.float().flatten()[:1] + bonus[i]
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

    def checkpoint_state(self) -> dict | None:
        """The novelty state for a checkpoint; None (logged and counted, never raised) if it cannot be taken."""
        try:
            return self.model.state_dict()
        except Exception:
            self.failures += 1
            logger.exception("novelty state could not be taken for the checkpoint (failure %d)", self.failures)
            return None

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

    ``config_dict`` travels inside the class to the Ray actor, on any node. The novelty state rides in the
    ``client_states`` of every DeepSpeed checkpoint OpenRLHF writes (regular and best), so a resume restores the
    state of exactly the checkpoint ``latest`` names, under exactly OpenRLHF's own resume condition.
    """

    class NoveltyPPOTrainer(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            show_info_logs()
            self.install_novelty()

        def novelty_hooked(self) -> bool:
            """The proof, asked through the actor handle, that this actor runs the hook (see check_hooked)."""
            return True

        def install_novelty(self):
            """Swap in the hooked experience maker (same constructor arguments as OpenRLHF's own)."""
            config = NoveltyConfig.from_dict(config_dict)
            maker_cls = novelty_experience_maker(type(self.experience_maker))
            self.experience_maker = maker_cls(
                self.actor_model_group, self.critic_model_group, self.reward_model_group,
                self.reference_model_group, self.kl_ctl, self.strategy, self.tokenizer,
            )
            self.experience_maker.novelty = NoveltyHook(config, self.tokenizer, self.args.rollout.n_samples_per_prompt)

        def init_checkpoint_states(self):
            states = super().init_checkpoint_states()
            novelty = states.pop(CLIENT_STATE_KEY, None)
            # A blob since 0.1.1 (see _with_novelty); a dict from older checkpoints is deep-copied: Ray hands its
            # tensors over as views on read-only buffers, and RND's optimizer would update them in place.
            blob = isinstance(novelty, (bytes, np.ndarray))
            novelty = from_bytes(novelty) if blob else copy.deepcopy(novelty)
            hook = self.experience_maker.novelty
            legacy = os.path.join(self.args.ckpt.path, "novelty_state.pt")  # written by openrlhf-novelty 0.1.0 before this change
            if novelty is None and states.get("global_step", 0) > 0 and os.path.exists(legacy):
                logger.warning("checkpoint has no novelty state; loading the older %s, which may be from "
                               "another step", legacy)
                novelty = load_state(legacy)
            if novelty is not None:
                hook.model.load_state_dict(novelty)
                logger.info("novelty state restored from the checkpoint (global step %s, novelty step %d)",
                            states.get("global_step"), hook.model.step)
            elif states.get("global_step", 0) > 0:
                logger.warning("resuming at global step %s from a checkpoint without novelty state: RND and the "
                               "archive start fresh", states.get("global_step"))
            return states

        def _with_novelty(self, client_states):
            # As one blob: the client_states travel through Ray to the actor that saves them, and a dict of tensors
            # arrives as views on one buffer that torch.save refuses (found by the real launch, tests/e2e). A uint8
            # array, not bytes: OpenRLHF logs the checkpoint states on resume, and an array's repr is summarised.
            state = self.experience_maker.novelty.checkpoint_state()
            if state is None:
                return dict(client_states or {})
            return {**(client_states or {}), CLIENT_STATE_KEY: np.frombuffer(to_bytes(state), dtype=np.uint8)}

        def train_step(self, rollout_samples, global_step):
            status, global_step = super().train_step(rollout_samples, global_step)
            status.update(self.experience_maker.novelty.last_stats)
            return status, global_step

        def save_logs_and_checkpoints(self, global_step, logs_dict=None, client_states=None):
            if global_step % self.args.ckpt.save_steps == 0:  # the same condition OpenRLHF saves under
                client_states = self._with_novelty(client_states)
            super().save_logs_and_checkpoints(global_step, logs_dict, client_states)

        def save_best_checkpoint(self, eval_metrics, global_step, client_states=None):
            super().save_best_checkpoint(eval_metrics, global_step, self._with_novelty(client_states))

    return NoveltyPPOTrainer


def check_hooked(actor) -> None:
    """Raise unless ``actor`` (a Ray actor handle) runs the hooked trainer. The swap is invisible if it missed:
    OpenRLHF would train on quality alone under a launcher that said "novelty by the hook". The hooked class's own
    method is the proof, not a private attribute of Ray's handle (whose absence once let this check pass)."""
    if not callable(getattr(actor, "novelty_hooked", None)):
        raise RuntimeError(f"openrlhf-novelty: async training started {type(actor).__name__} {actor!r}, not the "
                           "hooked training actor: the novelty hook would never run")


def novelty_async_trainer(base, config_dict: dict):
    """A subclass of OpenRLHF's PPOTrainerAsync (``PPOTrainerAsync.__ray_actor_class__``) whose training actor has
    the hook. Async training (``--train.async_enable``) trains in a ``TrainingActor`` (a BasePPOTrainer, so the
    same experience maker, train step and checkpoints as PPOTrainer) that PPOTrainerAsync starts from inside its own
    Ray actor, looking the class up in ``ppo_trainer_async`` when it does. A patch in the driver never reaches that
    process, so the swap happens here, in that actor, before OpenRLHF's own ``__init__`` runs."""
    import ray

    class NoveltyPPOTrainerAsync(base):
        def __init__(self, *args, **kwargs):
            self.hook_training_actor()
            super().__init__(*args, **kwargs)
            check_hooked(self.trainer_actor)

        @staticmethod
        def hook_training_actor():
            """Put the hooked TrainingActor where OpenRLHF's ``__init__`` looks it up. Ray pickles this class by
            value, and OpenRLHF's ``__init__`` with it, whose globals are then a copy of the module's: setting the
            module attribute alone misses it (the real launch showed it), so both scopes get the hooked class."""
            from openrlhf.trainer import ppo_trainer_async

            # OpenRLHF's own __init__ (base may already be a subclass, when the driver installed us twice).
            owner = next(c for c in base.__mro__ if "__init__" in vars(c)
                         and c.__init__.__globals__.get("__name__") == "openrlhf.trainer.ppo_trainer_async")
            scopes = [owner.__init__.__globals__, vars(ppo_trainer_async)]
            training = scopes[0].get("TrainingActor", ppo_trainer_async.TrainingActor)
            if not getattr(training, "_novelty_hooked", False):
                training = ray.remote(novelty_trainer(training.__ray_actor_class__, config_dict))
                training._novelty_hooked = True
            for scope in scopes:
                scope["TrainingActor"] = training
            return training

    return NoveltyPPOTrainerAsync


def quality_only_rewards(samples, quality_weight: float):
    """Evaluation samples with their rewards set to the quality the reward file logged (``novelty/quality``, times
    reward.quality_weight): OpenRLHF's eval_*_pass1 and its best-checkpoint choice average ``rewards``, which
    without the hook carry a novelty bonus that drifts as RND learns. Samples without it are left alone."""
    for s in samples:
        info = s.info if isinstance(s.info, dict) else {}
        if PREFIX + "quality" in info and s.rewards is not None:
            s.rewards = torch.tensor([quality_weight * _first(info[PREFIX + "quality"])], dtype=torch.float32)
    return samples


def quality_eval_trainer(base, config_dict: dict):
    """A subclass of OpenRLHF's PPOTrainer for runs without the hook (the reward file or server adds novelty per
    sample): evaluation is scored on quality alone, so eval metrics and the best checkpoint do not move with the
    bonus. Training samples are untouched."""

    class QualityEvalPPOTrainer(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            generate = self.samples_generator.generate_eval_samples
            weight = NoveltyConfig.from_dict(config_dict).reward_quality_weight

            def generate_eval_samples(**kwargs):
                return quality_only_rewards(generate(**kwargs), weight)

            self.samples_generator.generate_eval_samples = generate_eval_samples

    return QualityEvalPPOTrainer
