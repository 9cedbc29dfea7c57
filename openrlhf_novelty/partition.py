"""The judge's partition: a group's answers sorted into classes of one idea (DARLING's "same meaning?"), one
request per group rather than n^2 pairs. Classes make near-duplicates one idea for the diversity terms; where no
judgment comes back, the caller falls back to the embedding partition and counts it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Callable

from openrlhf_novelty.bounded import LRU, worth_logging
from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.text import clip_middle

logger = logging.getLogger("openrlhf_novelty.judge")

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


class Partitioner:
    """Class labels per group, from the judge's endpoints (``ask``: Endpoints.ask_everyone) or its local model.
    ``view`` is how the judge shows an answer (quoted, numbers blinded or not); ``stats`` and ``lock`` are the
    judge's, and a partition's cache hits, requests and failures count there."""

    def __init__(self, config: NoveltyConfig, template: str, view: Callable[[str], str], key, stats,
                 lock: threading.Lock, ask=None, local=None):
        self.config, self.template, self.view, self.key = config, template, view, key
        self.stats, self._lock, self.ask, self.local = stats, lock, ask, local
        self.cache = LRU(config.judge_cache_size)

    async def partition_many(self, prompts: list[str], groups: list[list[str]], seconds: float) -> list:
        deadline = asyncio.get_running_loop().time() + seconds
        return list(await asyncio.gather(*(self._one(p, g, deadline) for p, g in zip(prompts, groups))))

    async def _one(self, prompt: str, answers: list[str], deadline: float) -> list[int] | None:
        n = len(answers)
        if n < 2:
            return [0] * n
        key = self.key(prompt, "\x00".join(answers))  # in order: the labels are positional
        with self._lock:
            if key in self.cache:
                self.stats.cache_hits += 1
                return list(self.cache.hit(key))
            self.stats.partitions += 1
        found, missed = await self._judgments(self._request(prompt, answers), n, deadline)
        if not found:
            with self._lock:
                self.stats.partition_failures += 1
                failures = self.stats.partition_failures
            if worth_logging(failures):
                logger.warning("judge: no usable partition of a group of %d answers (%d such groups so far); it "
                               "falls back to the embedding partition", n, failures)
            return None
        labels = combine_partitions(found)
        if self.config.judge_cache_size and not missed:  # a partial judgment is not remembered
            with self._lock:
                self.cache.put(key, labels)
        return labels

    def _request(self, prompt: str, answers: list[str]) -> str:
        # Each answer as a quoted string (numbers blinded with judge.blind_numbers): an answer cannot add a line.
        # The group shares judge.max_chars, so n long answers do not overflow the judge's context.
        share = max(200, self.config.judge_max_chars // len(answers))
        listed = "\n".join(f"{i + 1}. {self.view(clip_middle(a, share))}" for i, a in enumerate(answers))
        return self.template.replace("{prompt}", prompt).replace("{responses}", listed)

    async def _judgments(self, text: str, n: int, deadline: float) -> tuple[list[list[int]], int]:
        """(the readable labelings of endpoints x judge.samples, how many requests were unanswered at deadline)."""
        parse = lambda reply: parse_classes(reply, n)  # noqa: E731
        if self.local is None:
            found, missed, _ = await self.ask(text, parse, deadline, self.config.judge_max_tokens,
                                              self.config.judge_samples)
            return found, missed
        # In-process, like the local soundness judge: not bounded by the deadline.
        cfg = self.config
        replies = await asyncio.to_thread(self.local.sample, [text], cfg.judge_samples, cfg.judge_max_tokens,
                                          cfg.judge_temperature)
        found = [parse(r) for r in replies[0]]
        with self._lock:
            self.stats.requests += cfg.judge_samples
            self.stats.parse_failures += sum(f is None for f in found)
        return [f for f in found if f is not None], 0
