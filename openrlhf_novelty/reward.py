"""The reward model: quality and novelty per sample, combined by one formula (``reward_formula``).

Every host adapter (OpenRLHF reward file, server, experience-maker hook, TRL) is a thin shim over ``NoveltyReward``:
``score`` a rollout batch (pure: no state changes), then ``update`` once per training step (RND learns what it
has seen, the archive remembers it).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass, field

import torch

from openrlhf_novelty.bounded import LRU, worth_logging
from openrlhf_novelty.checks import (
    CommonWords,
    LanguageCheck,
    PromptMemory,
    TemplateMemory,
    impostor_z,
    letter_grams,
    nondegenerate,
    prompt_free,
    relevance,
    shared_across_prompts,
    shingles,
    word_count,
)
from openrlhf_novelty.config import ConfigError, NoveltyConfig
from openrlhf_novelty.diversity import (
    Archive,
    class_min,
    embedding_classes,
    group_diversity,
    idea_similarity,
    knn_distance,
    prompt_key,
)
from openrlhf_novelty.outcome import OutcomeMemory, final_answer, outcome_term
from openrlhf_novelty.rnd import RND
from openrlhf_novelty.state import load_state, save_atomic
from openrlhf_novelty.text import clean_text, extract, split_reasoning, surface_form

EMBED_CACHE = 4096  # answers whose embedding quality() keeps for score() (TRL and the streaming reward call both)
TEMPLATE_SHINGLES = 200_000  # word 3-shingles the template check remembers (about 20 MB)

logger = logging.getLogger(__name__)

STATE_FORMAT = "openrlhf-novelty/1"
PREFIX = "novelty/"  # every component is logged as novelty/<name>; OpenRLHF shows it as train/novelty/<name>


def novelty_coef(cfg: NoveltyConfig, step: int) -> float:
    """beta_t: the novelty coefficient after ``step`` training steps."""
    h = cfg.reward_decay_steps
    if cfg.reward_decay == "inverse":  # i-MENTOR's 40 / (40 + t) with h = 40
        return cfg.reward_novelty_coef * h / (h + step)
    if cfg.reward_decay == "linear":
        return cfg.reward_novelty_coef * max(0.0, 1.0 - step / h)
    return cfg.reward_novelty_coef


def task_to_unit(cfg: NoveltyConfig, value: float) -> float:
    """A task reward clipped to reward.task_clip and rescaled to [0, 1], so it mixes with format / soundness and
    can gate novelty."""
    lo, hi = cfg.reward_task_clip
    return (min(hi, max(lo, value)) - lo) / (hi - lo if hi > lo else 1.0)


def novelty_terms(cfg: NoveltyConfig) -> list[str]:
    """The novelty terms this config computes, in order: what adapters log, fixed for the run (a bank path with no
    entries is refused when the model is built, so the path decides)."""
    on = (("rnd", cfg.rnd_weight > 0), ("diversity", cfg.diversity_weight > 0),
          ("archive", cfg.archive_weight > 0), ("bank", bool(cfg.bank_path) and cfg.bank_weight > 0),
          ("outcome", cfg.outcome_weight > 0))
    return [k for k, enabled in on if enabled]


def quality_checks(cfg: NoveltyConfig) -> list[str]:
    """The conditions that multiply quality under this config (what adapters log): only non-degeneracy. Junk is
    not partly good; every other check withholds novelty only, so its misfire on an honest answer costs at most
    the bonus."""
    return ["nondegenerate"] if cfg.quality_degenerate_weight > 0 else []


def novelty_checks(cfg: NoveltyConfig) -> list[str]:
    """The conditions that multiply the gate under this config, in order (what adapters log)."""
    on = (("relevance", cfg.quality_relevance_weight > 0), ("language", cfg.quality_language_weight > 0),
          ("fluency", cfg.quality_fluency_weight > 0),
          ("shared", cfg.quality_shared_threshold <= 1 or cfg.quality_template_threshold <= 1))
    return [k for k, enabled in on if enabled]


def gate_log_keys(cfg: NoveltyConfig) -> list[str]:
    """What every path that pays novelty logs besides the terms: the sum, the gate, its conditions, answers with
    nothing to embed (empty after extraction, or the encoder failed), and whether the judge's partition failed
    (diversity.mode judge)."""
    return (["novelty", "gate"] + novelty_checks(cfg) + ["unembedded"]
            + (["partition_failed"] if cfg.diversity_mode == "judge" and cfg.diversity_weight > 0 else []))


def quality_gate(cfg: NoveltyConfig, quality: torch.Tensor, mask: torch.Tensor | None = None,
                 conditions: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """How much of its novelty each sample may earn: from its quality in [0, 1] (0 where masked), times the
    novelty conditions (relevance, language: 1 - w (1 - value); shared: 1 - shared)."""
    if cfg.reward_gate == "multiplicative":
        gate = quality.clone()
    elif cfg.reward_gate == "threshold":
        gate = (quality >= cfg.reward_gate_threshold).to(quality.dtype)
    else:
        gate = torch.ones_like(quality)
    weights = {"relevance": cfg.quality_relevance_weight, "language": cfg.quality_language_weight,
               "fluency": cfg.quality_fluency_weight}
    for name, value in (conditions or {}).items():
        gate = gate * (1.0 - value) if name == "shared" else gate * (1.0 - weights[name] * (1.0 - value))
    return gate.masked_fill(mask, 0.0) if mask is not None else gate


def reward_formula(cfg: NoveltyConfig, step: int, quality: torch.Tensor, novelty_terms: dict[str, torch.Tensor],
                   mask: torch.Tensor | None = None, conditions: dict[str, torch.Tensor] | None = None,
                   ideas: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The whole reward, per sample; every input and output is a [batch] tensor. The only place terms combine.

        quality = mean_w(format, soundness, task)             (NoveltyReward.quality; 1 when none is configured)
                  x (1 - w_deg (1 - nondegenerate))           junk is not partly good
        novelty = sum_k  w_k * term_k            k in rnd, diversity, archive, bank, outcome (each in [0, 1])
        gate    = ( quality                      multiplicative: novelty pays in proportion to quality
                  | 1[quality >= threshold]      threshold
                  | 1 )                          none
                  x (1 - w_rel (1 - relevance))  about its own prompt, not an echo of it
                  x (1 - w_lang (1 - language))  in its prompt's language
                  x (1 - w_flu (1 - fluency))    prose, not word salad or letter junk
                  x (1 - shared)                 not an answer or template also given to another prompt
        bonus   = beta_t * gate * novelty    gate and each term: the lowest over the answer's idea
        reward  = w_q * quality  +  bonus

    Grades average (a half-sound answer is half good). Non-degeneracy multiplies quality (an averaged-in zero
    would let a large novelty bonus outbid it); the other conditions multiply the gate only: an off-topic answer
    keeps what the grades (a judge) give it but earns no novelty, and a check that misfires on an honest answer
    costs it the bonus, never its quality. ``conditions`` maps relevance / language / fluency / shared to
    [batch] values.
    ``mask`` marks samples whose quality is unknown (a failed judge with fallback ``mask``, a failed reward file):
    they get no quality credit and no novelty credit. ``ideas`` (classes [groups, n], eligible [batch]): the
    near-duplicates of each group (cosine >= diversity.duplicate_threshold); every member is paid the lowest gate
    and the lowest of each embedding term among them, so a reworded or dressed-up copy never out-earns the copy
    (the terms come back as paid). The outcome term of an extracted answer (boxed, a regex) keeps its own value:
    it counts final answers, which a copy shares, and two solutions that read alike can still reach different
    answers; with outcome.answer text the answer is the whole text, so a one-word edit of a copy is its idea. Adapters that add novelty to a reward computed elsewhere (the hook) add ``bonus``.
    """
    weights = {"rnd": cfg.rnd_weight, "diversity": cfg.diversity_weight, "archive": cfg.archive_weight,
               "bank": cfg.bank_weight, "outcome": cfg.outcome_weight}
    gate = quality_gate(cfg, quality, mask, conditions)
    if ideas is not None:  # an idea's near-duplicates earn what its least novel, least open member earns
        classes, eligible = ideas
        g, n = classes.shape
        own = {"outcome"} if cfg.outcome_answer != "text" else set()  # an extracted answer is counted as itself
        novelty_terms = {k: v if k in own else class_min(v.view(g, n), classes, eligible.view(g, n)).reshape(-1)
                         for k, v in novelty_terms.items()}
        gate = class_min(gate.view(g, n), classes, eligible.view(g, n)).reshape(-1)
    novelty = sum((weights[k] * v for k, v in novelty_terms.items()), torch.zeros_like(quality))
    if mask is not None:
        quality = quality.masked_fill(mask, 0.0)
    bonus = novelty_coef(cfg, step) * gate * novelty
    reward = cfg.reward_quality_weight * quality + bonus
    return {**novelty_terms, "reward": reward, "quality": quality, "novelty": novelty, "gate": gate, "bonus": bonus}


@dataclass
class ScoredBatch:
    """What ``NoveltyReward.score`` returns: per-sample rewards and components, plus what ``update`` needs."""

    rewards: list[float]
    components: dict[str, list[float]]
    step: int
    embeddings: torch.Tensor = field(repr=False)
    prompt_keys: torch.Tensor = field(repr=False)
    valid: torch.Tensor = field(repr=False)  # samples with text to learn from (empty ones are skipped)
    relevant: torch.Tensor | None = field(default=None, repr=False)  # answers that may move their prompt's topic
    shingles: list[list[int]] | None = field(default=None, repr=False)  # what the template memory learns
    texts: list[str] | None = field(default=None, repr=False)  # what the checks read (common words learn them)
    answers: list[str] | None = field(default=None, repr=False)  # the final answers (outcome), if not ``texts``


@dataclass
class Reading:
    """One batch as the reward reads it. ``checked``: what the checks read (split: reasoning and answer together);
    ``answers``: the final answers (the judge, format and outcome read them; their wording decides templates and
    copies: a shared stock reasoning must not make two different answers one idea, nor a new reasoning make a
    copied answer new); ``reasonings``: None with extract.reasoning keep; the ``free_*`` forms have their
    prompt's words removed (``prompt_free``); ``shingles``: the prompt-free answers' word 3-shingles (the
    near-duplicate links); ``shared_shingles``: what the template memory compares across prompts: those (prompt
    words removed, a template with a per-prompt tail is the same everywhere) and, with embed.text prompt_free, the
    answers' own as written (another prompt's answer copied is the same, whatever words of either prompt it holds;
    its two prompt-free readings are not, and the embedding check reads those)."""

    prompts: list[str]  # special-token residue removed
    checked: list[str]
    answers: list[str]
    reasonings: list[str] | None
    free: list[str]
    free_answers: list[str]
    free_reasonings: list[str] | None
    shingles: list[list[int]]
    shared_shingles: list[list[int]]


def _both(check, texts: list[str], answers: list[str] | None) -> torch.Tensor:
    """``check`` of the texts, or (extract.reasoning split: the answers are not the texts) the lower of the texts'
    and the answers' alone."""
    out = check(texts)
    return out if answers is None or answers is texts else torch.minimum(out, check(answers))


class NoveltyReward:
    """Quality-gated novelty for GRPO groups. Thread-safe; build once per process and reuse."""

    def __init__(self, config: NoveltyConfig | None = None, embedder=None, judge=None):
        self.config = cfg = config or NoveltyConfig()
        if embedder is None:
            from openrlhf_novelty.embed import build_embedder

            embedder = build_embedder(cfg)
        self.embedder = embedder
        if judge is None and cfg.judge_enabled:
            from openrlhf_novelty.judge import Judge

            judge = Judge(cfg)
        self.judge = judge
        self.bank_texts = _read_bank(cfg.bank_path) if cfg.bank_path and cfg.bank_weight > 0 else []
        self.prompts = PromptMemory(cfg.quality_relevance_prompts)  # relevance's reference
        self.language = LanguageCheck(cfg.quality_languages) if cfg.quality_language_weight > 0 else None
        self.templates = TemplateMemory(TEMPLATE_SHINGLES)
        self.common = CommonWords()
        self.outcomes = OutcomeMemory(cfg.outcome_prompts, cfg.outcome_answers)  # final answers seen per prompt
        self._watch: dict[str, list[float]] = {}  # check name -> [sum, count, warned]
        self.watch_checks = True  # warn when a check fails on most samples (off where failing is the point: audit)
        self._emb_cache = LRU(EMBED_CACHE)  # answer text -> its embedding
        self.encode_failures = 0  # encoder calls that raised (their texts got no novelty)
        self._cache_lock = threading.Lock()
        self.step = 0
        self._rnd: RND | None = None
        self._archive: Archive | None = None
        self._bank_emb: torch.Tensor | None = None
        self._lock = threading.RLock()
        self._warned_ungated = False

    # -- lazily built parts (they need the embedding size, which needs the model)
    def _ensure_built(self, dim: int) -> None:
        if self._rnd is not None:
            return
        cfg = self.config
        self._rnd = RND(dim, cfg.rnd_hidden, cfg.rnd_out, cfg.rnd_lr, cfg.rnd_update_proportion,
                        cfg.rnd_updates_per_batch, cfg.rnd_warmup_samples, cfg.rnd_obs_clip, cfg.rnd_clip,
                        cfg.rnd_seed, cfg.embed_device)
        if cfg.archive_weight > 0 or cfg.quality_shared_threshold <= 1:  # the shared check reads it too
            self._archive = Archive(cfg.archive_size, dim, cfg.embed_device)
        if self.bank_texts:  # prompt_free: the answers' surface (no prompt to remove words of: docs/reward.md)
            free = self.config.embed_text == "prompt_free"
            self._bank_emb = self.embedder.encode([prompt_free(t, "") if free else t for t in self.bank_texts])

    @property
    def rnd(self) -> RND:
        self._ensure_built(self.embedder.dim)
        return self._rnd

    @property
    def archive(self) -> Archive | None:
        self._ensure_built(self.embedder.dim)
        return self._archive

    def novelty_terms(self) -> list[str]:
        return novelty_terms(self.config)

    def health_check(self) -> None:
        """Ask the judge and the embedding server, if configured, once at start-up: a dead endpoint raises a
        one-line JudgeUnavailable now rather than being discovered at sample 10,000."""
        if self.judge is not None:
            self.judge.health_check()
        if hasattr(self.embedder, "health_check"):
            self.embedder.health_check()

    def extract_texts(self, responses: list[str]) -> tuple[list[str], list[bool]]:
        """The answers the judge, the format check and the outcome term read (extract.reasoning split: the final
        answers), and whether extract.pattern matched each (and, split, the reasoning was closed)."""
        return self._extract(responses)[:2]

    def _extract(self, responses: list[str]) -> tuple[list[str], list[bool], list[str] | None]:
        """(answers, matched, reasonings): reasonings None with extract.reasoning keep."""
        cfg = self.config
        split = cfg.extract_reasoning == "split"
        texts, matched, reasonings = [], [], [] if split else None
        for r in responses:
            t, closed = clean_text(r, cfg.extract_strip_tokens), True
            if split:  # before the surface form, which would strip the tags as markup
                reasoning, t, closed = split_reasoning(t, cfg.extract_reasoning_tags)
                reasonings.append(surface_form(reasoning) if cfg.extract_normalize else reasoning)
            t, ok = extract(t, cfg.extract_pattern, cfg.extract_fallback)
            texts.append(surface_form(t) if cfg.extract_normalize else t)
            matched.append(ok and closed and (bool(t) or not split))  # split: a final answer was given
        return texts, matched, reasonings

    @staticmethod
    def _checked(texts: list[str], reasonings: list[str] | None) -> list[str]:
        """What the quality checks read: the reasoning and the final answer together (split), so a looping, junk,
        off-topic or foreign-language reasoning fails them as it would in one text."""
        if reasonings is None:
            return texts
        return [f"{r}\n\n{t}".strip() for r, t in zip(reasonings, texts)]

    def final_answers(self, texts: list[str]) -> list[str | None]:
        """The normalised final answer of each extracted text (outcome.answer), None where it gives none."""
        return [final_answer(t, self.config.outcome_answer) for t in texts]

    def score(self, prompts: list[str], responses: list[str], group_size: int,
              task_rewards: list[float] | None = None, soundness: list[float | None] | None = None,
              quality: list[float | None] | None = None,
              recent: tuple[torch.Tensor, torch.Tensor] | None = None,
              classes: list[list[int] | None] | None = None) -> ScoredBatch:
        """Score a rollout batch: ``group_size`` consecutive samples share a prompt (GRPO's n). State is unchanged.

        ``task_rewards``: the host's own reward per sample (e.g. correctness); non-finite values count as 0.
        ``soundness``: judge scores in [0, 1] already computed (None = unknown); when omitted and a judge is
        configured, the judge is asked here.
        ``quality``: the whole quality term already computed elsewhere (the OpenRLHF reward file computes it per
        sample, the experience-maker hook adds novelty); replaces format / soundness / task, no judge is asked.
        None or non-finite = unknown (masked).
        ``recent``: (embeddings, prompt keys) of answers seen but not yet in the archive (the streaming reward's
        pending samples): an answer shared with one of those is shared too.
        ``classes``: diversity.mode judge, the judge's classes per group already asked (``judge_classes``).

        Four stages: the texts and their quality (extraction, grades, non-degeneracy); the novelty conditions
        (relevance, language, shared), which with quality decide who is eligible to earn novelty and to count as
        a sibling; the novelty terms; ``reward_formula``.
        """
        self._check_lengths(prompts, responses, group_size, task_rewards=task_rewards, soundness=soundness,
                            quality=quality)
        cfg = self.config
        texts, matched, reasonings = self._extract(responses)
        checked = self._checked(texts, reasonings)
        judge_failed = None
        if soundness is None and quality is None and self._judges_soundness():  # outside the lock: it takes seconds
            soundness, judge_failed = self._ask_judge(prompts, texts)
        if classes is None and cfg.diversity_weight > 0 and cfg.diversity_mode == "judge":
            classes = self._ask_partition(prompts, texts, group_size)
        keys = torch.tensor([prompt_key(p) for p in prompts], dtype=torch.int64)
        read = self._read(prompts, checked, texts, reasonings)
        with self._lock:
            emb, encoded = self._novelty_vectors(read)
            self._ensure_built(emb.shape[1])
            # Text that was embedded: an empty or unencodable text is no idea (no novelty, nobody's sibling).
            valid = torch.tensor([bool(t) for t in texts], device=emb.device) & (emb.abs().sum(-1) > 0)
            q, parts, mask = self._given_quality(quality) if quality is not None else \
                self._quality(checked, matched, task_rewards, soundness, texts)
            conditions = self._conditions(read, keys, emb, valid, recent, encoded)
            pf_shingles = read.shingles
            gate = quality_gate(cfg, q, mask, conditions)
            eligible = valid.cpu() & (gate > 0)
            ideas = sims = None
            if cfg.diversity_duplicate_threshold <= 1:  # near-duplicates within a group: one idea
                d = emb.shape[1]
                sims = idea_similarity(emb.view(-1, group_size, d), pf_shingles,
                                       letters=[letter_grams(a) for a in texts])
                ideas = (embedding_classes(emb.view(-1, group_size, d), cfg.diversity_duplicate_threshold,
                                           eligible.view(-1, group_size).to(emb.device), sims).cpu(), eligible)
            terms, extra = self._terms(emb, keys, valid.cpu(), eligible, group_size, classes, sims)
            if cfg.outcome_weight > 0:
                terms["outcome"] = outcome_term(self.final_answers(texts), keys.tolist(), eligible, group_size,
                                                self.outcomes, cfg.outcome_batch_weight)
            out = reward_formula(cfg, self.step, q, terms, mask, conditions, ideas)
            components = {k: v.tolist() for group in (parts, conditions, extra, out) for k, v in group.items()}
            components["unembedded"] = (~valid).double().tolist()
            if judge_failed is not None:
                components["judge_failed"] = [float(f) for f in judge_failed]
            relevant = conditions["relevance"] >= 0.5 if "relevance" in conditions else None
            return ScoredBatch(rewards=components["reward"], components=components, step=self.step,
                               embeddings=emb, prompt_keys=keys, valid=valid, relevant=relevant,
                               shingles=read.shared_shingles, texts=checked, answers=texts)

    @staticmethod
    def _check_lengths(prompts: list[str], responses: list[str], group_size: int, **per_sample) -> None:
        n_total = len(responses)
        if len(prompts) != n_total:
            raise ValueError(f"got {len(prompts)} prompts for {n_total} responses")
        if group_size < 1 or n_total % group_size:
            raise ValueError(f"{n_total} samples do not split into groups of {group_size}")
        for name, values in per_sample.items():
            if values is not None and len(values) != n_total:
                raise ValueError(f"got {len(values)} {name} for {n_total} responses")

    @staticmethod
    def _given_quality(quality: list[float | None]):
        """Quality computed elsewhere (our reward file, your reward): clamped to [0, 1]; None / NaN = masked."""
        unknown = [v is None or not math.isfinite(v) for v in quality]
        q = torch.tensor([0.0 if u else min(1.0, max(0.0, float(v))) for v, u in zip(quality, unknown)],
                         dtype=torch.float64)
        return q, {}, (torch.tensor(unknown) if any(unknown) else None)

    def _read(self, prompts, checked, answers, reasonings) -> Reading:
        """Each sample as the checks and the novelty vector read it (``Reading``)."""
        # Special-token residue (a chat template kept in OpenRLHF's prompt) would make every prompt alike.
        cleaned = [clean_text(p, self.config.extract_strip_tokens) for p in prompts]
        free = [prompt_free(t, p) for t, p in zip(checked, cleaned)]  # restating the prompt buys nothing
        split = reasonings is not None
        free_answers = [prompt_free(a, p) for a, p in zip(answers, cleaned)] if split else free
        free_reasonings = [prompt_free(r, p) for r, p in zip(reasonings, cleaned)] if split else None
        pf = [shingles(f) for f in free_answers]
        shared = pf
        if self.config.embed_text == "prompt_free":  # read whole, the embedding check sees such copies at cosine 1
            written = [shingles(prompt_free(a, "")) for a in answers]  # lower-cased words, nothing removed
            shared = [sorted(set(a) | set(b)) for a, b in zip(pf, written)]
        return Reading(cleaned, checked, answers, reasonings, free, free_answers, free_reasonings, pf, shared)

    def _conditions(self, read: Reading, keys, emb, valid, recent, encoded):
        """The novelty conditions, each a [n] tensor in [0, 1] (relevance, language; shared: 1 = shared). Split,
        each check also reads the answer alone (an honest reasoning must not carry a junk, off-topic or foreign
        answer past it), and language the reasoning alone. ``encoded``: the prompt-free texts the novelty vector
        was built from, with their embeddings (embed.text prompt_free), which relevance reads instead of encoding
        them again; None = relevance encodes its own."""
        cfg = self.config
        out: dict[str, torch.Tensor] = {}
        cleaned, texts, answers, split = read.prompts, read.checked, read.answers, read.reasonings is not None
        if cfg.quality_relevance_weight > 0:
            if encoded is not None:  # split: the reasoning and the answer each, the lower counts
                rel = [self._relevance(keys, cleaned, f, e) for f, e in encoded]
                out["relevance"] = rel[0] if len(rel) == 1 else torch.minimum(*rel)
            else:
                out["relevance"] = _both(lambda f: self._relevance(keys, cleaned, f), read.free,
                                         read.free_answers if split else None)
        if self.language is not None:
            out["language"] = _both(lambda t: self.language(t, cleaned, keys.tolist()), texts, answers)
            if split:  # a reasoning in another language, ahead of an answer in the prompt's
                out["language"] = out["language"].minimum(self.language(read.reasonings, cleaned, keys.tolist()))
        if cfg.quality_fluency_weight > 0:
            out["fluency"] = _both(self.common.fluency, texts, answers)
            for free, _ in encoded or ():  # prompt_free: the prompt's own words must not carry word salad past it
                out["fluency"] = out["fluency"].minimum(self.common.fluency(free, self.common.FREE_RAMP))
        if "shared" in novelty_checks(cfg):
            shared = torch.zeros(len(texts), dtype=torch.float64)
            if cfg.quality_shared_threshold <= 1:
                pools = [recent] if recent is not None else []
                if self._archive is not None:
                    pools.append((self._archive.emb[: self._archive.count], self._archive.keys[: self._archive.count]))
                past = (None, None) if not pools else pools[0] if len(pools) == 1 else \
                    (torch.cat([e.float().cpu() for e, _ in pools]), torch.cat([k.cpu() for _, k in pools]))
                shared = shared_across_prompts(emb, keys, valid, cfg.quality_shared_threshold, *past)
            if cfg.quality_template_threshold <= 1:
                shared = shared.maximum(self.templates.shared(read.shared_shingles, keys.tolist(),
                                                              cfg.quality_template_threshold))
            out["shared"] = shared * valid.cpu().double()
        return out

    def _relevance(self, keys: torch.Tensor, prompts: list[str], free: list[str],
                   emb: torch.Tensor | None = None) -> torch.Tensor:
        """How much closer each answer, its prompt's words removed (``free``, embedded as ``emb`` when given), is
        to its own prompt's topic than to the other recent prompts' (``checks.relevance``); 0 for an answer that
        is nothing but its prompt's words."""
        cfg = self.config
        key_list = keys.tolist()
        try:
            self.prompts.lookup(key_list, prompts, self.embedder.encode)
            own = self.prompts.topics(key_list)[1]
        except Exception as e:  # the encoder failed on the prompts: no topic to hold answers to, no novelty
            self._encoder_failed(len(set(key_list)), e)
            return torch.zeros(len(free), dtype=torch.float64)
        emb = self._encode(free) if emb is None else emb
        impostors = None
        if self._archive is not None:
            impostors = impostor_z(emb, own, keys, self._archive.emb[: self._archive.count],
                                   self._archive.keys[: self._archive.count])
        rel, measured = relevance(emb, own, keys, *self.prompts.topics(), tuple(cfg.quality_relevance_ramp),
                                  cfg.quality_relevance_min_prompts, impostors=impostors)
        if len(self.prompts) > cfg.quality_relevance_min_prompts:  # past the warm-up: unmeasured = alike prompts
            self._watch_check("relevance_measured", measured.double())
        rel = rel * torch.tensor([bool(f) for f in free], dtype=torch.float64)  # nothing of its own: about nothing
        self._watch_check("relevance", rel)
        return rel

    def _terms(self, emb, keys, valid, eligible, group_size, judged_classes, sims=None):
        """The novelty terms per sample (and the extra components: rnd_raw, partition_failed). Only a sample that
        can earn novelty (text, and an open gate) is a sibling worth differing from; near-duplicates within a
        group (``sims``, the idea similarity, >= diversity.duplicate_threshold) are one idea: no diversity from
        each other, and each term takes the idea's lowest value, so dressing a copy up never earns more than the
        copy."""
        cfg = self.config
        n_total, d = emb.shape
        terms: dict[str, torch.Tensor] = {}
        extra: dict[str, torch.Tensor] = {}
        if cfg.rnd_weight > 0:
            terms["rnd"], extra["rnd_raw"] = self._rnd.score(emb)
        if cfg.diversity_weight > 0:
            # RepExp's batch scope: one group of the whole batch (every prompt's samples are the others).
            size = n_total if cfg.diversity_mode == "elliptical" and cfg.diversity_elliptical_scope == "batch" \
                else group_size
            classes = None
            if judged_classes is not None:  # where the judge gave none, the embedding partition's classes
                fallback = embedding_classes(emb.view(-1, size, d), cfg.diversity_threshold,
                                             eligible.view(-1, size).to(emb.device)).cpu()
                failed = torch.tensor([c is None for c in judged_classes])
                classes = torch.stack([fallback[g] if c is None else torch.tensor(c)
                                       for g, c in enumerate(judged_classes)])
                extra["partition_failed"] = failed.double().repeat_interleave(size)
            terms["diversity"] = group_diversity(emb.view(-1, size, d), cfg.diversity_mode, cfg.diversity_threshold,
                                                 eligible.view(-1, size), cfg.diversity_elliptical_lambda, classes,
                                                 cfg.diversity_duplicate_threshold,
                                                 sims if size == group_size else None).reshape(-1)
        if self._archive is not None and cfg.archive_weight > 0:
            terms["archive"] = self._archive.novelty(emb, keys, cfg.archive_k, cfg.archive_per_prompt)
        if self._bank_emb is not None:
            terms["bank"] = knn_distance(emb, self._bank_emb.to(emb.device), 1)
        terms = {k: v.double().cpu() * valid for k, v in terms.items()}  # empty text is not an idea
        return terms, {k: v.cpu() for k, v in extra.items()}

    def quality(self, prompts: list[str], responses: list[str], task_rewards: list[float] | None = None,
                ) -> tuple[list[float | None], dict[str, list[float]]]:
        """The quality side alone (format, judge, task, non-degeneracy), per sample; None = unknown (masked).

        This is what OpenRLHF's per-sample reward call computes; the novelty side (its conditions included) needs
        the whole group.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts for {len(responses)} responses")
        texts, matched, reasonings = self._extract(responses)
        soundness = judge_failed = None
        if self._judges_soundness():
            soundness, judge_failed = self._ask_judge(prompts, texts)
        q, parts, mask = self._quality(self._checked(texts, reasonings), matched, task_rewards, soundness, texts)
        values = [None if mask is not None and mask[i] else v for i, v in enumerate(q.tolist())]
        out = {k: v.tolist() for k, v in parts.items()}
        if judge_failed is not None:
            out["judge_failed"] = [float(f) for f in judge_failed]
        return values, out

    def _judges_soundness(self) -> bool:
        """Soundness is asked only when it counts: with reward.soundness_weight 0 a judge is there for the
        partition (diversity.mode judge), and a request per sample would be paid for nothing."""
        return self.judge is not None and self.config.reward_soundness_weight > 0

    def _ask_judge(self, prompts: list[str], texts: list[str]) -> tuple[list[float | None], list[bool]]:
        """Judge the extracted texts; an empty one scores 0 without a call (there is nothing to judge)."""
        asked = [i for i, t in enumerate(texts) if t]
        scores: list[float | None] = [0.0] * len(texts)
        failed = [False] * len(texts)
        if asked:
            got, bad = self.judge.judge_many([prompts[i] for i in asked], [texts[i] for i in asked])
            for i, s, f in zip(asked, got, bad):
                scores[i], failed[i] = s, f
        return scores, failed

    def judge_classes(self, prompts: list[str], responses: list[str], size: int,
                      timeout: float | None = None) -> list[list[int] | None]:
        """diversity.mode judge: the judge's classes for each group of ``size`` consecutive samples, to pass to
        ``score`` (the streaming reward asks outside its lock, within what is left of the host's request limit)."""
        return self._ask_partition(prompts, self.extract_texts(responses)[0], size, timeout)

    def _ask_partition(self, prompts: list[str], texts: list[str], size: int,
                       timeout: float | None = None) -> list[list[int] | None]:
        """The judge's classes for each group of ``size`` (a label per sample), None where it gave none. Empty texts
        are not shown to it: each is a class of its own (and no sibling: it is not eligible)."""
        if timeout is not None and timeout <= 0:
            return [None] * (len(texts) // size)
        asked, groups = [], []
        for start in range(0, len(texts), size):
            idx = [i for i in range(start, start + size) if texts[i]]
            asked.append(idx)
            groups.append([texts[i] for i in idx])
        got = self.judge.partition_many([prompts[start] for start in range(0, len(texts), size)], groups, timeout)
        out: list[list[int] | None] = []
        for g, (idx, labels) in enumerate(zip(asked, got)):
            if labels is None:
                out.append(None)
                continue
            full = [size + j for j in range(size)]  # unshown (empty) answers: classes of their own
            for i, label in zip(idx, labels):
                full[i - g * size] = label
            out.append(full)
        return out

    def _quality(self, texts, matched, task_rewards, soundness, answers=None):
        """Quality as ``reward_formula`` writes it: the weighted mean of the grades configured (format, soundness,
        task; 1 when none is) times non-degeneracy (split: of the reasoning with the answer, and of the answer)."""
        cfg = self.config
        q, parts, mask = self._grades(matched, task_rewards, soundness)
        if cfg.quality_degenerate_weight > 0:
            parts["nondegenerate"] = _both(lambda t: nondegenerate(t, cfg.quality_min_words, cfg.quality_max_repeat),
                                           texts, answers)
            q = q * (1.0 - cfg.quality_degenerate_weight * (1.0 - parts["nondegenerate"]))
            self._watch_check("nondegenerate", parts["nondegenerate"])
        if not parts and not self._warned_ungated and cfg.reward_gate != "none":
            self._warned_ungated = True
            logger.warning("no quality source (format pattern, judge, task reward or degeneracy check): quality is "
                           "1, so novelty is gated by the novelty conditions alone")
        return q, parts, mask

    def _novelty_vectors(self, read: Reading) -> tuple[torch.Tensor, list | None]:
        """The vector every novelty term reads, and (embed.text prompt_free) the prompt-free texts it was encoded
        from with their embeddings, for relevance to read. The vector: the text's embedding (prompt_free: the text
        without its prompt's words; nothing left, a zero vector), or (extract.reasoning split) the renormalized
        (1 - w) e(answer) + w e(reasoning), both parts encoded in one call. With w > 0 a response missing either
        part, or whose reasoning is under quality.min_words words ("ok"), gets a zero vector (unembedded: no
        novelty, nobody's sibling): alone, its answer's vector would lie far from every sibling's mix, which would
        pay the policy for dropping its reasoning."""
        free = self.config.embed_text == "prompt_free"
        texts = read.free_answers if free else read.answers
        w = self.config.embed_reasoning_weight
        if read.reasonings is None or w == 0:
            emb = self._encode(texts) * self._embeddable(texts)
            return emb, ([(texts, emb)] if free else None)
        reasonings = read.free_reasonings if free else read.reasonings
        both = self._encode(texts + reasonings) * self._embeddable(texts + reasonings)
        answer, reasoning = both[: len(texts)], both[len(texts):]
        least = max(1, self.config.quality_min_words)
        whole = torch.tensor([bool(t) and word_count(r) >= least for t, r in zip(read.answers, read.reasonings)],
                             device=both.device)
        mixed = torch.nn.functional.normalize((1.0 - w) * answer + w * reasoning, dim=-1)
        mixed = mixed * (whole & (answer.abs().sum(-1) > 0) & (reasoning.abs().sum(-1) > 0))[:, None]
        return mixed, ([(texts, answer), (reasonings, reasoning)] if free else None)

    def _embeddable(self, texts: list[str]) -> torch.Tensor:
        """[n, 1]: 1 where the text has something to embed. prompt_free: at least quality.min_words words left
        (an adversary's review found the whole prompt restated plus one topical word paid +0.2 over an honest
        answer: the vector read the one word, far from every sentence, and the prompt's words passed the checks
        that read the whole text)."""
        least = max(1, self.config.quality_min_words)
        ok = (lambda t: word_count(t) >= least) if self.config.embed_text == "prompt_free" else bool
        return torch.tensor([[float(ok(t))] for t in texts], device=self.config.embed_device).reshape(len(texts), 1)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        """The texts' embeddings; texts encoded in the last few thousand are not encoded again. When the encoder
        fails, the texts it could not encode get a zero vector (see _embeddable): a step is never lost to it."""
        with self._cache_lock:
            known = {t: self._emb_cache[t] for t in texts if t in self._emb_cache}
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing or not texts:
            try:
                new = self.embedder.encode(missing)
            except Exception as e:  # an encoder out of memory, a lost embedding server
                self._encoder_failed(len(missing), e)
                dim = self._rnd.dim if self._rnd is not None else self.embedder.dim
                zero = torch.zeros(dim, device=self.config.embed_device)
                return torch.stack([known.get(t, zero) for t in texts]) if texts else zero[None][:0]
            known.update(zip(missing, new))
            with self._cache_lock:
                for t, e in zip(missing, new):
                    if e.any():  # an embedding server's zero row is a failure: ask again next time
                        self._emb_cache.put(t, e)
            if not texts:
                return new
        return torch.stack([known[t] for t in texts])

    # A check that fails on most samples is more likely misconfigured for the task than right about every answer.
    _FAILING = ("mean {name} is {mean:.2f} over the first {n} samples: most answers fail this check, so they earn "
                "no novelty (and, for nondegenerate, little quality). If that is not what the task looks like, set ")
    _WATCH = {"relevance": (0.3, _FAILING + "quality.relevance_weight 0 if answers need not resemble their prompt "
                                           "(a bare number, code)"),
              "nondegenerate": (0.5, _FAILING + "quality.min_words lower if short answers are right for this task"),
              "relevance_measured": (0.5, "relevance could be measured for only {mean:.0%} of the first {n} samples: "
                                          "the encoder cannot tell the prompts apart (a long shared template or "
                                          "prefix?), so relevance is 1 for the others and does not gate them")}

    def _encoder_failed(self, texts: int, error: Exception) -> None:
        self.encode_failures += 1
        if worth_logging(self.encode_failures):
            logger.error("novelty: the encoder failed on %d texts (%d failures so far): %s: %s; they earn no novelty "
                         "(novelty/unembedded)", texts, self.encode_failures, type(error).__name__, error)

    def _watch_check(self, name: str, values: torch.Tensor) -> None:
        if not self.watch_checks:
            return
        floor, message = self._WATCH[name]
        with self._lock:  # the reward file calls quality() from many threads
            total = self._watch.setdefault(name, [0.0, 0, False])
            total[0] += float(values.sum())
            total[1] += values.numel()
            if total[2] or total[1] < 256 or total[0] / total[1] >= floor:
                return
            total[2] = True
            logger.warning(message.format(name=name, mean=total[0] / total[1], n=total[1]))

    def _grades(self, matched, task_rewards, soundness):
        """Weighted mean of the graded parts configured for this batch (format, soundness, task); 1 when none is."""
        cfg = self.config
        n = len(matched)
        parts: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        mask = None
        if (cfg.extract_pattern or cfg.extract_reasoning == "split") and cfg.reward_format_weight > 0:  # split: closed
            parts["format"], weights["format"] = torch.tensor(matched, dtype=torch.float64), cfg.reward_format_weight
        if soundness is not None and cfg.reward_soundness_weight > 0:
            unknown = torch.tensor([s is None or not math.isfinite(s) for s in soundness])
            values = torch.tensor([0.0 if u else min(1.0, max(0.0, float(s))) for s, u in zip(soundness, unknown)],
                                  dtype=torch.float64)
            parts["soundness"], weights["soundness"] = values, cfg.reward_soundness_weight
            mask = unknown if unknown.any() else None
        if task_rewards is not None and cfg.reward_task_weight > 0:
            vals = [float(t) if t is not None and math.isfinite(float(t)) else 0.0 for t in task_rewards]
            parts["task"] = torch.tensor([task_to_unit(cfg, v) for v in vals], dtype=torch.float64)
            weights["task"] = cfg.reward_task_weight
        if not parts:
            return torch.ones(n, dtype=torch.float64), parts, None
        total = sum(weights.values())
        quality = sum(weights[k] * parts[k] for k in parts) / total
        return quality.double(), parts, mask

    def update(self, scored: ScoredBatch | list[ScoredBatch]) -> dict[str, float]:
        """Learn from what one training step scored (one batch, or every batch since the last step): one RND
        training step, and the archive remembers it. Call once per step."""
        batches = scored if isinstance(scored, list) else [scored]
        with self._lock:
            emb = torch.cat([b.embeddings[b.valid.to(b.embeddings.device)] for b in batches])
            keys = torch.cat([b.prompt_keys[b.valid.cpu()] for b in batches])
            stats = {"rnd_loss": self.rnd.update(emb) if emb.shape[0] else 0.0,
                     "rnd_seen": float(self.rnd.obs_rms.count)}  # samples RND's normalizer has seen, ever
            if self._archive is not None and emb.shape[0]:
                self._archive.add(emb, keys)
                stats["archive_size"] = float(len(self._archive))
            for b in batches:  # the prompts' topics learn their relevant answers; the template memory all of them
                if b.relevant is not None:
                    ok = b.relevant.cpu() & b.valid.cpu()
                    self.prompts.observe(b.prompt_keys[ok], b.embeddings[ok.to(b.embeddings.device)])
                if b.shingles is not None:
                    self.templates.add(b.shingles, b.prompt_keys.tolist())
                if b.texts is not None:
                    self.common.add(b.texts)
                    if self.config.outcome_weight > 0:  # every answer sampled counts as seen, right or wrong
                        self.outcomes.add(b.prompt_keys.tolist(),
                                          self.final_answers(b.answers if b.answers is not None else b.texts))
            self.step += 1
            return stats

    # -- state
    def state_dict(self) -> dict:
        with self._lock:
            cfg = self.config
            return {
                "format": STATE_FORMAT,
                "step": self.step,
                "dim": self.rnd.dim,
                "shape": {"rnd_hidden": cfg.rnd_hidden, "rnd_out": cfg.rnd_out, "archive_size": cfg.archive_size,
                          "embed_text": cfg.embed_text},
                "rnd": self.rnd.state_dict(),
                "archive": self._archive.state_dict() if self._archive is not None else None,
                "prompts": self.prompts.state_dict(),
                "templates": self.templates.state_dict(),
                "common": self.common.state_dict(),
                "outcomes": self.outcomes.state_dict(),
            }

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not an {STATE_FORMAT} state (format {state.get('format') if isinstance(state, dict) else None!r})")
        cfg = self.config
        with self._lock:
            # RND and the archive learned vectors of one kind of text; states saved before embed.text read whole.
            shape = {"embed_text": "whole", **state["shape"]}
            mismatched = [f"{k.replace('_', '.', 1)} is {getattr(cfg, k)} here but {v} in the state"
                          for k, v in shape.items() if k != "archive_size" and getattr(cfg, k) != v]
            if mismatched:
                raise ValueError("state does not fit this config: " + "; ".join(mismatched))
            self._ensure_built(int(state["dim"]))
            if self._rnd.dim != int(state["dim"]):
                raise ValueError(f"state was saved with {state['dim']}-dim embeddings, this embedder has {self._rnd.dim}")
            self._rnd.load_state_dict(state["rnd"])
            if self._archive is not None and state["archive"] is not None:
                self._archive.load_state_dict(state["archive"])
            if "prompts" in state:  # states saved before relevance existed have none
                self.prompts.load_state_dict(state["prompts"])
            if "templates" in state:
                self.templates.load_state_dict(state["templates"])
            if "common" in state:
                self.common.load_state_dict(state["common"])
            if "outcomes" in state:
                self.outcomes.load_state_dict(state["outcomes"])
            self.step = int(state["step"])

    def save(self, path: str | os.PathLike) -> None:
        save_atomic(self.state_dict(), path)

    def try_save(self, path: str | os.PathLike) -> bool:
        """``save`` for training loops: a failure (disk full, read-only) is logged, not raised; the previous file
        stays intact (the write is atomic) and training goes on."""
        try:
            self.save(path)
            return True
        except Exception:
            logger.exception("novelty state could not be saved to %s; the previous file (if any) is intact", path)
            return False

    def load(self, path: str | os.PathLike) -> None:
        self.load_state_dict(load_state(path))


def _read_bank(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [line.strip() for line in fh]
    except OSError as e:
        raise ConfigError(f"config bank.path: cannot read {path} ({e.strerror})") from None
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise ConfigError(f"config bank.path: {path} has no entries (one known answer per line)")
    return lines
