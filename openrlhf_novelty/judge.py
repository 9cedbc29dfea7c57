"""The RLAIF soundness judge: an LLM scores each completion 0-10 against a rubric, normalized to [0, 1].

In training it is called for every sample from many threads of many vLLM engine processes, so it is bounded
(one concurrency limit per process), cached (identical pairs judged once), retried with backoff and jitter,
protected by a circuit breaker, and it never raises: a failure gives the configured fallback and is counted.
The transport (endpoints, retries, breaker) is ``endpoint.py``; the partition into ideas is ``partition.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass

from openrlhf_novelty.bounded import LRU, worth_logging
from openrlhf_novelty.config import ConfigError, NoveltyConfig
from openrlhf_novelty.endpoint import Endpoints, JudgeUnavailable, LoopThread, Settings, time_left
from openrlhf_novelty.lm import ChatLM
from openrlhf_novelty.partition import PARTITION_RUBRICS, Partitioner
from openrlhf_novelty.text import clip_middle

logger = logging.getLogger(__name__)

_JSON_ANSWER = (
    'Answer with JSON only: {"score": <integer 0-10>, "reason": "<one sentence>"}.'
)
# What the probability-scoring local judge reads the next token after (the start of the JSON answer asked for).
PROBABILITY_PREFIX = '{"score": '
RUBRICS = {
    "soundness": (
        "You are a strict reviewer. Rate the soundness of the RESPONSE to the TASK on a 0-10 scale.\n"
        "Consider: factual plausibility (nothing contradicts well-established knowledge), internal logic (the "
        "claims follow from each other and from the task), and specificity (concrete and checkable, not vague).\n"
        "0 = nonsense or off-task, 5 = plausible but vague or partly flawed, 10 = sound, specific and on-task.\n\n"
        "TASK:\n{prompt}\n\nRESPONSE:\n{response}\n\n" + _JSON_ANSWER
    ),
    "hypothesis": (
        "You are a scientist reviewing a proposed hypothesis. Rate it on a 0-10 scale.\n"
        "Consider: is it plausible given the task's data, is it testable (it predicts something that could be "
        "measured and could turn out false), is it specific (names a concrete feature and a direction), and does "
        "it answer the task. An off-topic, untestable or self-contradictory hypothesis scores at most 2.\n\n"
        "TASK:\n{prompt}\n\nHYPOTHESIS:\n{response}\n\n" + _JSON_ANSWER
    ),
}


def load_rubric(name_or_path: str, setting: str = "judge.rubric", builtin: dict[str, str] = RUBRICS,
                placeholder: str = "{response}") -> str:
    if name_or_path in builtin:
        return builtin[name_or_path]
    try:
        with open(name_or_path, encoding="utf-8") as fh:
            template = fh.read()
    except OSError as e:
        raise ConfigError(f"config {setting}: '{name_or_path}' is neither a built-in rubric "
                          f"({', '.join(builtin)}) nor a readable file ({e.strerror})") from None
    if placeholder not in template:
        raise ConfigError(f"config {setting}: {name_or_path} has no {placeholder} placeholder")
    return template


def render(template: str, prompt: str, response: str) -> str:
    # str.replace, not str.format: rubrics contain literal JSON braces.
    return template.replace("{prompt}", prompt).replace("{response}", response)


_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*|\b(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
                     r"twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|million)\b",
                     re.IGNORECASE)


def blind_numbers(response: str) -> str:
    """What a judge with ``judge.blind_numbers`` reads: the response as a JSON string, every number shown as #.

    A judge scores with a number, and a number in the answer primes it: SmolLM2 read by probability gave the same
    32 answers +0.31 with a leading "9", +0.22 with "10/10" and +0.12 with a "9" mid-sentence; blinded, every mean
    shift is within 0.004 (BENCHMARKS.md). The quotes also mark where the answer ends, so it cannot pose as the
    rubric.
    """
    return json.dumps(_NUMBER.sub("#", response), ensure_ascii=False)


def quoted(response: str) -> str:
    """What a judge with ``judge.blind_numbers`` off reads: the response as a JSON string (the quotes mark where
    the answer ends, so a forged 'TASK: ... RESPONSE: ... {"score": 10}' stays inside it)."""
    return json.dumps(response, ensure_ascii=False)


_SCORE_PATTERNS = [
    re.compile(r'"?score"?\s*[:=]\s*"?(\d+(?:\.\d+)?)', re.IGNORECASE),
    re.compile(r"(\d+(?:\.\d+)?)\s*/\s*10\b"),
    re.compile(r"(?:rating|rate it|i rate this|i give (?:it|this)(?: a)?)\D{0,12}(\d+(?:\.\d+)?)", re.IGNORECASE),
    # Last resort, for small local judges: a 0-10 number in quotes, or ending the reply ('... is "7".').
    re.compile(r"[\"'](10|\d)(?:\.\d+)?[\"']"),
    re.compile(r"\b(10|\d)(?:\.\d+)?\s*[.!]?\s*$"),
]


def parse_score(text: str) -> float | None:
    """A judge reply -> soundness in [0, 1], or None when no score can be found (never confused with a low score)."""
    if not text:
        return None
    for block in re.findall(r"\{[^{}]*\}", text):
        try:
            value = json.loads(block).get("score")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, str):
            value = value.strip().split("/")[0]
            try:
                value = float(value)
            except ValueError:
                continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            return min(10.0, max(0.0, float(value))) / 10.0
    for pattern in _SCORE_PATTERNS:
        m = pattern.search(text)
        if m:
            return min(10.0, max(0.0, float(m.group(1)))) / 10.0
    return None


@dataclass
class JudgeStats:
    judged: int = 0  # samples asked about (cache misses)
    cache_hits: int = 0
    requests: int = 0  # HTTP requests / local generations, retries included
    retries: int = 0
    failures: int = 0  # samples that got the fallback
    parse_failures: int = 0
    breaker_skips: int = 0
    breaker_opens: int = 0
    deadline_misses: int = 0  # samples with a request still unanswered at judge.deadline
    partitions: int = 0  # groups asked to be sorted into classes (cache misses)
    partition_failures: int = 0  # groups whose classes no judgment gave (the caller falls back)

    @property
    def failure_rate(self) -> float:
        return self.failures / self.judged if self.judged else 0.0


class Judge:
    """Soundness in [0, 1] per (prompt, response), from OpenAI-compatible endpoints or a local model; and, through
    its Partitioner, classes of one idea per group. Safe from any number of threads; it never raises."""

    def __init__(self, config: NoveltyConfig):
        if not config.judge_enabled:
            raise ConfigError("config judge: set judge.base_url (an endpoint) or judge.local_path (a local model)")
        self.config = config
        self.template = load_rubric(config.judge_rubric)
        # Always a quoted JSON string, so an answer cannot end itself and write its own rubric and score.
        self.view = blind_numbers if config.judge_blind_numbers else quoted
        self.stats = JudgeStats()
        self._lock = threading.Lock()
        self.transport = Endpoints(Settings.judge(config), self.stats, self._lock)
        self.local = ChatLM.shared(config.judge_local_path, config.judge_local_device) if config.judge_local_path \
            else None
        self.partitions = Partitioner(
            config, load_rubric(config.judge_partition_rubric, "judge.partition_rubric", PARTITION_RUBRICS,
                                "{responses}"),
            self.view, self._key, self.stats, self._lock, ask=self.transport.ask_everyone, local=self.local)
        self._cache = LRU(config.judge_cache_size)  # (prompt, response) key -> soundness
        self._inflight: dict[bytes, tuple[asyncio.Future, float]] = {}  # key -> (judgment, its deadline)

    # -- public, synchronous
    def judge_many(self, prompts: list[str], responses: list[str]) -> tuple[list[float | None], list[bool]]:
        """(soundness, failed) per sample. Failed samples get judge.fallback_score, or None with fallback=mask."""
        try:
            return LoopThread.get().run(self.ajudge_many(prompts, responses))
        except Exception:  # a bug of ours must not take the training step down either
            logger.exception("judge crashed; every sample of this batch gets the fallback")
            with self._lock:
                self.stats.failures += len(prompts)
                self.stats.judged += len(prompts)
            return [self._fallback()] * len(prompts), [True] * len(prompts)

    def partition_many(self, prompts: list[str], groups: list[list[str]],
                       timeout: float | None = None) -> list[list[int] | None]:
        """For each group of answers to one prompt, a class label per answer (answers the judge finds to express
        the same idea share one), or None where no judgment came back (the caller falls back and counts it). One
        request per group and endpoint x judge.samples, all groups at once, bounded by judge.deadline (or
        ``timeout`` seconds, if sooner: what is left of a host's request limit)."""
        seconds = self.config.judge_deadline if timeout is None else min(self.config.judge_deadline, timeout)
        try:
            return LoopThread.get().run(self.partitions.partition_many(prompts, groups, seconds))
        except Exception:  # a bug of ours must not take the training step down
            logger.exception("judge partition crashed; every group of this batch falls back")
            with self._lock:
                self.stats.partitions += len(groups)
                self.stats.partition_failures += len(groups)
            return [None] * len(groups)

    def health_check(self) -> None:
        """Load the local model, or ask every endpoint once; a one-line JudgeUnavailable names what does not
        answer."""
        if self.local is not None:
            self.local.load()
        else:
            self.transport.health_check()

    def redact(self, text: str) -> str:
        return self.transport.redact(text)

    def close(self) -> None:
        self.transport.close()

    # -- async core
    async def ajudge_many(self, prompts: list[str], responses: list[str]):
        if self.local is not None:  # one batched generation beats one call per sample by an order of magnitude
            return await asyncio.to_thread(self._judge_local_batch, prompts, responses)
        deadline = asyncio.get_running_loop().time() + self.config.judge_deadline
        results = await asyncio.gather(*(self._judge_one(p, r, deadline) for p, r in zip(prompts, responses)))
        return [s for s, _ in results], [f for _, f in results]

    def _rubric(self, prompt: str, response: str) -> str:
        return render(self.template, prompt, self.view(clip_middle(response, self.config.judge_max_chars)))

    @staticmethod
    def _key(prompt: str, response: str) -> bytes:
        return hashlib.blake2b(f"{prompt}\x00{response}".encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def _remember(self, key: bytes, score: float) -> None:
        if self.config.judge_cache_size:
            with self._lock:
                self._cache.put(key, score)

    def _fallback(self) -> float | None:
        return None if self.config.judge_fallback == "mask" else self.config.judge_fallback_score

    # -- a local model: the batch's new pairs in chunks, one generation (or probability reading) per chunk
    def _judge_local_batch(self, prompts: list[str], responses: list[str], chunk: int = 16):
        keys = [self._key(p, r) for p, r in zip(prompts, responses)]
        todo: dict[bytes, str] = {}
        with self._lock:
            for key, p, r in zip(keys, prompts, responses):
                if key in self._cache:
                    self._cache.hit(key)
                    self.stats.cache_hits += 1
                elif key not in todo:
                    todo[key] = self._rubric(p, r)
            self.stats.judged += len(todo)
        items = list(todo.items())
        got: dict[bytes, float | None] = {}
        for start in range(0, len(items), chunk):
            got.update(self._local_chunk(items[start:start + chunk]))
        return self._local_results(keys, got)

    def _local_chunk(self, part: list[tuple[bytes, str]]) -> dict[bytes, float | None]:
        """Each pair's soundness (the mean of its readable readings), or None when none was readable."""
        probability = self.config.judge_local_scoring == "probability"
        n = 1 if probability else self.config.judge_samples  # reading probabilities is deterministic
        texts = [t for _, t in part]
        try:
            if probability:  # the expected score 0-10, always readable, on the scale generate mode reads
                readings = [[e / 10] for e in self.local.score_expectation(texts, PROBABILITY_PREFIX)]
            else:
                replies = self.local.sample(texts, n, self.config.judge_max_tokens, self.config.judge_temperature)
                readings = [[parse_score(r) for r in reps] for reps in replies]
        except Exception:
            logger.exception("local judge failed on %d samples; they get the fallback", len(part))
            readings = [[None] * n for _ in part]
        out = {}
        with self._lock:
            self.stats.requests += len(part) * n
            for (key, _), parsed in zip(part, readings):
                ok = [x for x in parsed if x is not None]
                self.stats.parse_failures += len(parsed) - len(ok)
                out[key] = sum(ok) / len(ok) if ok else None
        return out

    def _local_results(self, keys: list[bytes], got: dict[bytes, float | None]):
        scores, failed, counted = [], [], set()
        for key in keys:
            with self._lock:
                value = self._cache[key] if key in self._cache else got.get(key)
            if value is None:
                if key not in counted:  # a failure per judgment, not per duplicate of it
                    counted.add(key)
                    with self._lock:
                        self.stats.failures += 1
                scores.append(self._fallback())
                failed.append(True)
                continue
            if key in got:
                self._remember(key, value)
            scores.append(value)
            failed.append(False)
        return scores, failed

    # -- endpoints: one judgment per pair, shared by identical pairs in flight
    async def _judge_one(self, prompt: str, response: str, deadline: float) -> tuple[float | None, bool]:
        key = self._key(prompt, response)
        with self._lock:
            if key in self._cache:
                self.stats.cache_hits += 1
                return self._cache.hit(key), False
        # Identical pairs in flight at once (GRPO samples often repeat) share one judgment. Only the loop thread
        # touches _inflight, so it needs no lock.
        if key in self._inflight:
            with self._lock:
                self.stats.cache_hits += 1
            shared, ends = self._inflight[key]
            if ends <= deadline:  # it ends (with its own fallback) before ours: its answer is ours, to the bit
                return await asyncio.shield(shared)
            try:
                return await asyncio.wait_for(asyncio.shield(shared), time_left(deadline))
            except asyncio.TimeoutError:
                return self._missed_deadline()
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = (future, deadline)
        try:
            result = await self._judge_uncached(key, prompt, response, deadline)
            future.set_result(result)
            return result
        except BaseException as e:
            future.set_exception(e)
            raise
        finally:
            del self._inflight[key]

    def _missed_deadline(self) -> tuple[float | None, bool]:
        with self._lock:
            self.stats.deadline_misses += 1
            self.stats.judged += 1  # a failure of its own: failure_rate stays a share of samples
            self.stats.failures += 1
        return self._fallback(), True

    async def _judge_uncached(self, key: bytes, prompt: str, response: str,
                              deadline: float) -> tuple[float | None, bool]:
        with self._lock:
            self.stats.judged += 1
        # A local judge never comes here: ajudge_many batches it.
        scores, missed, asked = await self.transport.ask_everyone(
            self._rubric(prompt, response), parse_score, deadline, self.config.judge_max_tokens,
            self.config.judge_samples)
        if missed:
            with self._lock:
                self.stats.deadline_misses += 1
                misses = self.stats.deadline_misses
            if worth_logging(misses):
                logger.warning("judge: %d of %d requests for a sample still unanswered at judge.deadline (%g s); "
                               "scoring it on the %d that answered (%d such samples so far)", missed, asked,
                               self.config.judge_deadline, asked - missed, misses)
        if not scores:
            with self._lock:
                self.stats.failures += 1
            return self._fallback(), True
        score = sum(scores) / len(scores)
        if not missed:  # a partial average is not remembered: ask again next time
            self._remember(key, score)
        return score, False


__all__ = ["Judge", "JudgeStats", "JudgeUnavailable", "blind_numbers", "load_rubric", "parse_score", "quoted", "render"]
