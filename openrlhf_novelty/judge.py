"""The RLAIF soundness judge: an LLM scores each completion 0-10 against a rubric, normalized to [0, 1].

In training it is called for every sample from many threads of many vLLM engine processes, so it is bounded
(one concurrency limit per process), cached (identical pairs judged once), retried with backoff and jitter,
protected by a circuit breaker, and it never raises: a failure gives the configured fallback and is counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import logging
import os
import random
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from openrlhf_novelty.config import ConfigError, NoveltyConfig
from openrlhf_novelty.lm import ChatLM
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


# DARLING's "same meaning?" classes, asked of the judge for a whole group at once (one request, not n^2 pairs).
PARTITION_RUBRICS = {
    "ideas": (
        "You sort answers to the same TASK into classes by the idea each one expresses. Two answers are in the same "
        "class when they make essentially the same point or propose the same thing, however differently they are "
        "worded, long or styled; they are in different classes when their core ideas differ.\n\n"
        "TASK:\n{prompt}\n\nANSWERS (each a quoted string):\n{responses}\n\n"
        'Answer with JSON only: {"classes": [<class of answer 1>, <class of answer 2>, ...]}, one integer per '
        "answer, in order; answers with the same idea get the same integer."
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


def parse_classes(text: str, n: int) -> list[int] | None:
    """A partition reply -> one class label per answer (0 = the first answer's class, numbered by first
    appearance), or None unless it names exactly n classes (a wrong count is a failure, never a guess)."""
    for block in re.findall(r"\{[^{}]*\}", text or ""):
        try:
            value = json.loads(block).get("classes")
        except (ValueError, AttributeError):
            continue
        if (isinstance(value, list) and len(value) == n
                and all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in value)):
            first: dict = {}
            return [first.setdefault(str(v).strip(), len(first)) for v in value]
    return None


def combine_partitions(labelings: list[list[int]]) -> list[int]:
    """Several judgments of one group (endpoints x judge.samples) as one partition: two answers share a class when
    at least half of the judgments put them together, closed transitively."""
    import torch

    from openrlhf_novelty.diversity import same_cluster

    together = sum((torch.tensor(lab)[:, None] == torch.tensor(lab)[None, :]).double() for lab in labelings)
    return same_cluster(together / len(labelings), 0.5).double().argmax(-1).tolist()


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


class _Breaker:
    """Opens after ``threshold`` consecutive failures; while open the endpoint is skipped for ``cooldown`` s."""

    def __init__(self, threshold: int, cooldown: float):
        self.threshold, self.cooldown = threshold, cooldown
        self.consecutive, self.open_until = 0, 0.0

    def allows(self) -> bool:
        return time.monotonic() >= self.open_until

    def record(self, ok: bool) -> bool:
        """Returns True when this failure opened the breaker."""
        if ok:
            self.consecutive = 0
            return False
        self.consecutive += 1
        if self.consecutive >= self.threshold and self.allows():
            self.open_until = time.monotonic() + self.cooldown
            self.consecutive = 0
            return True
        return False


class _LoopThread:
    """One asyncio loop per process, on a daemon thread: every caller thread shares its clients and semaphore."""

    _instance: _LoopThread | None = None
    _lock = threading.Lock()

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="novelty-judge-loop", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> _LoopThread:
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


_ASYNCIO_TIMEOUT = hasattr(asyncio, "timeout")  # Python 3.11+


def _deadline(seconds: float):
    """A hard per-request deadline as well as the client's timeout: a server dripping bytes keeps resetting a read
    timeout. asyncio.timeout (3.11+) costs no extra task per request, unlike wait_for."""
    if _ASYNCIO_TIMEOUT:
        return asyncio.timeout(seconds)
    import contextlib

    @contextlib.asynccontextmanager
    async def fallback():  # Python 3.10: cancel the request from a timer
        task, fired = asyncio.current_task(), []

        def expire():
            fired.append(True)
            task.cancel()

        handle = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            yield
        except asyncio.CancelledError:
            if fired:  # our timer: a timeout, retried like any other
                raise asyncio.TimeoutError() from None
            raise  # someone else's cancellation (judge.deadline): it must end the request, not be retried
        finally:
            handle.cancel()

    return fallback()


class EndpointError(RuntimeError):
    """A non-2xx answer on the aiohttp transport (the openai transport raises openai.APIStatusError)."""

    def __init__(self, status_code: int, message: str):
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code


def _retryable(exc: BaseException) -> bool:
    """Timeouts, connection errors, 429 and 5xx (and 408 / 409) are worth another try; other 4xx are not."""
    if isinstance(exc, asyncio.TimeoutError):
        return True
    status = getattr(exc, "status_code", None)
    if isinstance(exc, EndpointError) or (status is not None and type(exc).__module__.startswith("openai")):
        return status >= 500 or status in (408, 409, 429)
    if type(exc).__module__.startswith("aiohttp"):  # connection refused / reset, payload errors
        return True
    import openai

    return isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError))


class Judge:
    """Soundness in [0, 1] per (prompt, response), from OpenAI-compatible endpoints or a local model."""

    def __init__(self, config: NoveltyConfig):
        if not config.judge_enabled:
            raise ConfigError("config judge: set judge.base_url (an endpoint) or judge.local_path (a local model)")
        self.config = config
        self.template = load_rubric(config.judge_rubric)
        self.partition_template = load_rubric(config.judge_partition_rubric, "judge.partition_rubric",
                                              PARTITION_RUBRICS, "{responses}")
        # Always a quoted JSON string, so an answer cannot end itself and write its own rubric and score.
        self.view = blind_numbers if config.judge_blind_numbers else quoted
        self.endpoints = [u.strip().rstrip("/") for u in config.judge_base_url.split(",") if u.strip()]
        self.breakers = {u: _Breaker(config.judge_breaker_failures, config.judge_breaker_cooldown)
                         for u in self.endpoints}
        self.local = ChatLM.shared(config.judge_local_path, config.judge_local_device) if config.judge_local_path \
            else None
        self.stats = JudgeStats()
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._partition_cache: OrderedDict[bytes, list[int]] = OrderedDict()
        self._lock = threading.Lock()
        self._clients: dict[str, object] = {}
        self._inflight: dict[bytes, tuple[asyncio.Future, float]] = {}  # key -> (judgment, its deadline)
        self._semaphore: asyncio.Semaphore | None = None

    # -- public, synchronous: safe from any number of threads
    def judge_many(self, prompts: list[str], responses: list[str]) -> tuple[list[float | None], list[bool]]:
        """(soundness, failed) per sample. Failed samples get judge.fallback_score, or None with fallback=mask."""
        try:
            return _LoopThread.get().run(self.ajudge_many(prompts, responses))
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
        try:
            return _LoopThread.get().run(self.apartition_many(prompts, groups, timeout))
        except Exception:  # a bug of ours must not take the training step down
            logger.exception("judge partition crashed; every group of this batch falls back")
            with self._lock:
                self.stats.partitions += len(groups)
                self.stats.partition_failures += len(groups)
            return [None] * len(groups)

    async def apartition_many(self, prompts: list[str], groups: list[list[str]],
                              timeout: float | None = None) -> list[list[int] | None]:
        seconds = self.config.judge_deadline if timeout is None else min(self.config.judge_deadline, timeout)
        deadline = asyncio.get_running_loop().time() + seconds
        return list(await asyncio.gather(*(self._partition_one(p, g, deadline) for p, g in zip(prompts, groups))))

    async def _partition_one(self, prompt: str, answers: list[str], deadline: float) -> list[int] | None:
        n = len(answers)
        if n < 2:
            return [0] * n
        key = self._key(prompt, "\x00".join(answers))  # in order: the labels are positional
        with self._lock:
            if key in self._partition_cache:
                self._partition_cache.move_to_end(key)
                self.stats.cache_hits += 1
                return list(self._partition_cache[key])
            self.stats.partitions += 1
        # Each answer as a quoted string (numbers blinded with judge.blind_numbers): an answer cannot add a line.
        # The group shares judge.max_chars, so n long answers do not overflow the judge's context.
        share = max(200, self.config.judge_max_chars // n)
        listed = "\n".join(f"{i + 1}. {self.view(clip_middle(a, share))}" for i, a in enumerate(answers))
        text = self.partition_template.replace("{prompt}", prompt).replace("{responses}", listed)
        parse = lambda reply: parse_classes(reply, n)  # noqa: E731
        missed = 0
        if self.local is not None:  # in-process, like the local soundness judge: not bounded by the deadline
            replies = await asyncio.to_thread(self.local.sample, [text], self.config.judge_samples,
                                              self.config.judge_max_tokens, self.config.judge_temperature)
            found = [parse(r) for r in replies[0]]
            with self._lock:
                self.stats.requests += self.config.judge_samples
                self.stats.parse_failures += sum(f is None for f in found)
            found = [f for f in found if f is not None]
        else:
            found, missed, _ = await self._ask_everyone(text, parse, deadline)
        if not found:
            with self._lock:
                self.stats.partition_failures += 1
                failures = self.stats.partition_failures
            if failures <= 10 or failures % 1000 == 0:
                logger.warning("judge: no usable partition of a group of %d answers (%d such groups so far); it "
                               "falls back to the embedding partition", n, failures)
            return None
        labels = combine_partitions(found)
        if self.config.judge_cache_size and not missed:  # a partial judgment is not remembered
            with self._lock:
                self._partition_cache[key] = labels
                while len(self._partition_cache) > self.config.judge_cache_size:
                    self._partition_cache.popitem(last=False)
        return labels

    def health_check(self) -> None:
        """Ask every endpoint once, at start-up; raise a one-line error naming the endpoint that does not answer."""
        if self.local is not None:
            self.local.load()
            return
        for url in self.endpoints:
            try:
                _LoopThread.get().run(self._request(url, "Reply with the JSON {\"score\": 10}.", max_tokens=8))
            except Exception as e:
                first_line = self.redact(str(e).splitlines()[0]) if str(e) else ""
                raise JudgeUnavailable(f"judge endpoint {url} (model {self.config.judge_model!r}) does not answer: "
                                       f"{type(e).__name__}: {first_line}") from None

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced: an endpoint may echo the key it was sent in its error message."""
        key = os.environ.get(self.config.judge_api_key_env) or ""
        return text.replace(key, "<redacted>") if len(key) >= 4 else text

    def close(self) -> None:
        """Close the HTTP clients (their connection pools belong to the judge's event loop)."""
        clients, self._clients = list(self._clients.values()), {}
        if clients:
            async def close_all():
                for c in clients:
                    await c.close()

            try:
                _LoopThread.get().run(close_all())
            except Exception:  # closing is best effort; the process may be exiting
                pass

    # -- async core
    async def ajudge_many(self, prompts: list[str], responses: list[str]):
        if self.local is not None:  # one batched generation beats one call per sample by an order of magnitude
            return await asyncio.to_thread(self._judge_local_batch, prompts, responses)
        deadline = asyncio.get_running_loop().time() + self.config.judge_deadline
        results = await asyncio.gather(*(self._judge_one(p, r, deadline) for p, r in zip(prompts, responses)))
        return [s for s, _ in results], [f for _, f in results]

    def _judge_local_batch(self, prompts: list[str], responses: list[str], chunk: int = 16):
        keys = [self._key(p, r) for p, r in zip(prompts, responses)]
        todo: dict[bytes, str] = {}
        with self._lock:
            for key, p, r in zip(keys, prompts, responses):
                if key in self._cache:
                    self._cache.move_to_end(key)
                    self.stats.cache_hits += 1
                elif key not in todo:
                    todo[key] = render(self.template, p, self.view(clip_middle(r, self.config.judge_max_chars)))
            self.stats.judged += len(todo)
        got: dict[bytes, float | None] = {}
        items = list(todo.items())
        probability = self.config.judge_local_scoring == "probability"
        n = 1 if probability else self.config.judge_samples  # reading probabilities is deterministic
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
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
            with self._lock:
                self.stats.requests += len(part) * n
            for (key, _), parsed in zip(part, readings):
                ok = [x for x in parsed if x is not None]
                with self._lock:
                    self.stats.parse_failures += len(parsed) - len(ok)
                got[key] = sum(ok) / len(ok) if ok else None
        scores, failed, counted = [], [], set()
        with self._lock:
            for key in keys:
                value = self._cache[key] if key in self._cache else got.get(key)
                if value is None:
                    if key not in counted:  # a failure per judgment, not per duplicate of it
                        counted.add(key)
                        self.stats.failures += 1
                    scores.append(self._fallback())
                    failed.append(True)
                    continue
                if key in got and self.config.judge_cache_size:
                    self._cache[key] = value
                    while len(self._cache) > self.config.judge_cache_size:
                        self._cache.popitem(last=False)
                scores.append(value)
                failed.append(False)
        return scores, failed

    @staticmethod
    def _key(prompt: str, response: str) -> bytes:
        return hashlib.blake2b(f"{prompt}\x00{response}".encode("utf-8", "surrogatepass"), digest_size=16).digest()

    async def _judge_one(self, prompt: str, response: str, deadline: float) -> tuple[float | None, bool]:
        key = self._key(prompt, response)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                self.stats.cache_hits += 1
                return self._cache[key], False
        # Identical pairs in flight at once (GRPO samples often repeat) share one judgment. Only the loop thread
        # touches _inflight, so it needs no lock.
        if key in self._inflight:
            with self._lock:
                self.stats.cache_hits += 1
            shared, ends = self._inflight[key]
            if ends <= deadline:  # it ends (with its own fallback) before ours: its answer is ours, to the bit
                return await asyncio.shield(shared)
            try:
                return await asyncio.wait_for(asyncio.shield(shared), self._left(deadline))
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

    @staticmethod
    def _left(deadline: float) -> float:
        return max(0.0, deadline - asyncio.get_running_loop().time())

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
        text = render(self.template, prompt, self.view(clip_middle(response, self.config.judge_max_chars)))
        # A local judge never comes here: ajudge_many batches it.
        scores, missed, asked = await self._ask_everyone(text, parse_score, deadline)
        if missed:
            with self._lock:
                self.stats.deadline_misses += 1
                misses = self.stats.deadline_misses
            if misses <= 10 or misses % 1000 == 0:
                logger.warning("judge: %d of %d requests for a sample still unanswered at judge.deadline (%g s); "
                               "scoring it on the %d that answered (%d such samples so far)", missed, asked,
                               self.config.judge_deadline, asked - missed, misses)
        if not scores:
            with self._lock:
                self.stats.failures += 1
            return self._fallback(), True
        score = sum(scores) / len(scores)
        if self.config.judge_cache_size and not missed:  # a partial average is not remembered: ask again next time
            with self._lock:
                self._cache[key] = score
                while len(self._cache) > self.config.judge_cache_size:
                    self._cache.popitem(last=False)
        return score, False

    async def _ask_everyone(self, text: str, parse, deadline: float) -> tuple[list, int, int]:
        """Every endpoint x judge.samples at once, not one after another (in sequence the worst case, each retrying
        to its timeout, multiplied past OpenRLHF's 180 s limit), until ``deadline``: (the readable answers, how
        many requests were still unanswered then, how many were asked)."""
        tasks = [asyncio.ensure_future(self._ask_with_retries(source, text, parse))
                 for source in self.endpoints for _ in range(self.config.judge_samples)]
        done, pending = await asyncio.wait(tasks, timeout=self._left(deadline))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)  # let them release the semaphore
        done = [t for t in done if not t.cancelled()]
        bugs = [t.exception() for t in done if t.exception() is not None]  # _ask_with_retries catches the rest
        if bugs:
            logger.error("judge: %d requests crashed: %r", len(bugs), bugs[0])
        return [t.result() for t in done if t.exception() is None and t.result() is not None], len(pending), len(tasks)

    async def _ask_with_retries(self, source: str, text: str, parse):
        """One judgment from ``source``: the reply read by ``parse`` (None when unreadable), retried on errors."""
        cfg = self.config
        breaker = self.breakers.get(source)
        for attempt in range(cfg.judge_retries + 1):
            if breaker is not None and not breaker.allows():
                with self._lock:
                    self.stats.breaker_skips += 1
                return None
            try:
                with self._lock:
                    self.stats.requests += 1
                reply = await self._request(source, text, cfg.judge_max_tokens)
            except Exception as e:
                retry = _retryable(e) and attempt < cfg.judge_retries
                self._record(source, ok=False, error=e)
                if not retry:
                    return None
                with self._lock:
                    self.stats.retries += 1
                # Exponential backoff with full jitter: engines retrying in lockstep would re-create the overload.
                await asyncio.sleep(cfg.judge_backoff * (2**attempt) * random.uniform(0.5, 1.5))
                continue
            self._record(source, ok=True)
            value = parse(reply)
            if value is None:
                with self._lock:
                    self.stats.parse_failures += 1
            return value
        return None

    def _record(self, source: str, ok: bool, error: BaseException | None = None) -> None:
        breaker = self.breakers.get(source)
        if breaker is None:
            return
        with self._lock:
            opened = breaker.record(ok)
            if opened:
                self.stats.breaker_opens += 1
        if opened:
            logger.error("judge endpoint %s failed %d times in a row (last: %s); skipping it for %.0f s",
                         source, self.config.judge_breaker_failures, type(error).__name__,
                         self.config.judge_breaker_cooldown)

    async def _request(self, source: str, text: str, max_tokens: int) -> str:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.config.judge_concurrency)
        async with self._semaphore:
            # A plain body and a plain dict back on both transports: the openai client's chat.completions.create
            # spends ~2 ms of CPU per call walking its typed params and ~1 ms building a response model we read one
            # field of, which capped a 2-core node near 350 judgments/s at 64 in flight; its low-level post does not.
            body = {"model": self.config.judge_model, "messages": [{"role": "user", "content": text}],
                    "temperature": self.config.judge_temperature, "max_tokens": max_tokens}
            async with _deadline(self.config.judge_timeout):
                if self.config.judge_transport == "aiohttp":
                    reply = await self._post_aiohttp(source, body)
                else:
                    reply = await self._client(source).post("/chat/completions", body=body, cast_to=object)
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return ""  # a malformed body is an unparsable reply: the caller counts it as a failure

    async def _post_aiohttp(self, url: str, body: dict):
        """The chat-completions POST on a bare aiohttp session: ~0.5 ms of CPU per request against the openai
        client's ~1.7 ms (measured at 64 in flight), which is what lets one process keep 64 requests busy."""
        session = self._clients.get(url)
        if session is None:
            import aiohttp

            key = os.environ.get(self.config.judge_api_key_env)
            session = self._clients[url] = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {key}"} if key else None,
                connector=aiohttp.TCPConnector(limit=0),  # the semaphore is the limit
                timeout=aiohttp.ClientTimeout(total=self.config.judge_timeout))
        async with session.post(url + "/chat/completions", json=body) as response:
            if response.status >= 400:
                text = await response.text(errors="replace")
                try:
                    message = json.loads(text)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = text[:200]
                raise EndpointError(response.status, self.redact(str(message)))
            try:
                return await response.json(content_type=None)
            except ValueError:
                return None  # not JSON: an unparsable reply

    def _client(self, url: str):
        if url not in self._clients:
            import openai

            # Our own timeout and retries: the client's defaults (600 s, 2 retries) would outlast OpenRLHF's 180 s.
            kwargs = {"base_url": url, "api_key": os.environ.get(self.config.judge_api_key_env) or "EMPTY",
                      "timeout": self.config.judge_timeout, "max_retries": 0}
            # aiohttp as the transport when present (every OpenRLHF install has it): httpx's connection pool costs
            # ~4 ms of CPU per request at 64 in flight, which caps a 2-core trainer node near 230 judgments/s.
            aiohttp_client = getattr(openai, "DefaultAioHttpClient", None)
            if aiohttp_client is not None and importlib.util.find_spec("aiohttp") is not None:
                kwargs["http_client"] = aiohttp_client(timeout=self.config.judge_timeout)
            self._clients[url] = openai.AsyncOpenAI(**kwargs)
        return self._clients[url]

    def _fallback(self) -> float | None:
        return None if self.config.judge_fallback == "mask" else self.config.judge_fallback_score


class JudgeUnavailable(RuntimeError):
    """The health check could not reach a configured judge."""
