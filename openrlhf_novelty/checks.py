"""Cheap checks novelty cannot buy: the answer is not degenerate (a quality condition), and it is about its prompt,
in its prompt's language, and not the answer (or the template) given to other prompts (novelty conditions).

Each one closes a way a policy was seen to buy novelty (docs/gaming.md has the audit that measures them): drifting
off topic into an unvisited region of embedding space, restating the prompt to look on topic, repeating a token or
writing almost nothing (odd texts embed far from everything), switching language (a translation embeds far from its
source), and one prompt-independent answer or template for every prompt.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter
from functools import lru_cache

import torch

from openrlhf_novelty.bounded import LRU
from openrlhf_novelty.metrics import ngrams, tokens

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_WORD = re.compile(r"\w+")


def word_count(text: str) -> float:
    """Words, with scripts written without spaces counted by character: two CJK characters make about one word
    (a correct short Chinese answer is one \\w+ run, and counted as one word it failed the length check)."""
    cjk = len(_CJK.findall(text))
    return len(_WORD.findall(_CJK.sub(" ", text))) + cjk / 2


def repeat_share(text: str, n: int = 3) -> float:
    """The share of the text's word n-grams that repeat an earlier one (0 for ordinary prose, ~1 for 'HIP HIP ...')."""
    grams = ngrams(tokens(text), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def char_repeat_share(text: str, n: int = 6) -> float:
    """The share of the text's character n-grams (spaces removed) that repeat an earlier one: repetition inside and
    across words ('hahahahaha hahahahaha' is three 'words' no trigram repeats in), whatever the script."""
    chars = "".join(text.split())
    grams = [chars[i:i + n] for i in range(len(chars) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if len(grams) >= 8 else 0.0


def nondegenerate(texts: list[str], min_words: int, max_repeat: float) -> torch.Tensor:
    """Per text in [0, 1]: 0 under ``min_words`` words (``word_count``) or with a repeated share >= ``max_repeat``
    (word trigrams, or character 6-grams less a 0.25 allowance: prose reuses syllables), 1 at or below half that
    share, linear between (a refrain is fine, a loop is not)."""
    out = []
    for t in texts:
        if word_count(t) < max(1, min_words):
            out.append(0.0)
            continue
        r = max(repeat_share(t), char_repeat_share(t) - 0.25)
        out.append(1.0 if max_repeat >= 1 else min(1.0, max(0.0, 2.0 * (max_repeat - r) / max_repeat)))
    return torch.tensor(out, dtype=torch.float64)


def prompt_free(text: str, prompt: str) -> str:
    """The answer without its prompt's words, lower-cased, punctuation dropped: what relevance, the template check
    and (embed.text prompt_free) the novelty vector read, so that restating the prompt (or naming its topic in
    front of anything) buys none of them. Empty when the answer is all prompt. Exact words only: folding plurals
    too ("tweets" for a prompt's "tweet") was measured on the audit, and relevance then let one more off-topic
    answer in 28 prompts through."""
    own = set(_WORD.findall(prompt.lower()))
    return " ".join(w for w in _WORD.findall(text.lower()) if w not in own)


class PromptMemory:
    """The most recent distinct prompts (bounded, least recently seen dropped) and, for each, its topic: the
    relevance reference. A topic is the prompt's embedding plus the running mean of its past relevant answers' (a
    prompt says less about its topic than its answers do: measured on the audit corpus, honest answers' 5% quantile
    of z rose from -0.1 to 0.4). Only answers that were found relevant move it, so a policy drifting off topic as
    a whole cannot carry its prompt's topic along. Per-sample hosts see one prompt per call; the other prompts come
    from here."""

    ANSWERS = 64  # the answer mean is a running mean over about this many answers (older ones fade)

    def __init__(self, size: int):
        self.size = size
        self._emb: LRU = LRU(size)  # prompt key -> its embedding
        self._answers: dict[int, tuple[torch.Tensor, int]] = {}  # mean of its relevant answers, how many
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._emb)

    def lookup(self, keys: list[int], prompts: list[str], encode) -> None:
        """Remember these prompts (each encoded once, when first seen) as the most recent."""
        with self._lock:
            missing = {k: p for k, p in zip(keys, prompts) if k not in self._emb}
        new = dict(zip(missing, encode(list(missing.values())).float().cpu())) if missing else {}
        with self._lock:
            for k in keys:
                if k in self._emb:
                    self._emb.move_to_end(k)
                elif new[k].any():  # a zero row is an embedding server's failure: encoded again next time
                    self._emb[k] = new[k]
            # Forget the least recent, but never a prompt of this batch (a batch may hold more than `size`).
            while len(self._emb) > max(self.size, len(set(keys))):
                self._answers.pop(self._emb.popitem(last=False)[0], None)

    def observe(self, keys: torch.Tensor, emb: torch.Tensor) -> None:
        """Fold relevant answers (unit rows, with their prompts' keys) into their prompts' topics."""
        with self._lock:
            for k, e in zip(keys.tolist(), emb.float().cpu()):
                if k not in self._emb:
                    continue
                mean, count = self._answers.get(k, (torch.zeros_like(e), 0))
                count = min(count + 1, self.ANSWERS)
                self._answers[k] = (mean + (e - mean) / count, count)

    def topics(self, keys: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys [m], unit topic vectors [m, dim]) of the given remembered prompts, or of all of them."""
        with self._lock:
            keys = list(self._emb) if keys is None else keys
            if not keys:
                return torch.zeros(0, dtype=torch.int64), torch.zeros(0, 0)
            rows = []
            for k in keys:
                p = self._emb[k]
                a = self._answers.get(k)
                rows.append(p if a is None else torch.nn.functional.normalize(
                    p + torch.nn.functional.normalize(a[0], dim=0), dim=0))
            return torch.tensor(keys, dtype=torch.int64), torch.stack(rows)

    def state_dict(self) -> dict:
        with self._lock:
            keys = list(self._emb)
            dim = next(iter(self._emb.values())).shape[0] if keys else 0
            answered = [k for k in keys if k in self._answers]
            return {"keys": torch.tensor(keys, dtype=torch.int64),
                    "emb": torch.stack([self._emb[k] for k in keys]) if keys else torch.zeros(0, 0),
                    "answer_keys": torch.tensor(answered, dtype=torch.int64),
                    "answer_mean": torch.stack([self._answers[k][0] for k in answered]) if answered
                    else torch.zeros(0, dim),
                    "answer_count": torch.tensor([self._answers[k][1] for k in answered], dtype=torch.int64)}

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            self._emb = LRU(self.size)
            self._emb.update((int(k), e.float().clone()) for k, e in zip(state["keys"], state["emb"]))
            self._emb.trim()
            self._answers = {int(k): (m.float().clone(), int(c)) for k, m, c in
                             zip(state.get("answer_keys", []), state.get("answer_mean", []),
                                 state.get("answer_count", []))}


def impostor_z(answers: torch.Tensor, own: torch.Tensor, keys: torch.Tensor, past: torch.Tensor,
               past_keys: torch.Tensor, min_count: int = 32, min_spread: float = 0.01) -> torch.Tensor | None:
    """[n] how much closer each answer is to its own topic than past answers to *other* prompts are (z against
    those impostors' similarities to the same topic), or None with fewer than ``min_count`` impostors. The other
    side of ``relevance``'s comparison: an off-topic sentence that happens to sit near its topic is rarely nearer
    than answers that were about something else."""
    if past.shape[0] < min_count:
        return None
    sims = past.float().cpu() @ own.float().cpu().T  # [N, n]
    others = past_keys.cpu()[:, None] != keys.cpu()[None, :]
    count = others.sum(0)
    mean = (sims * others).sum(0) / count.clamp(min=1)
    std = ((((sims - mean) ** 2) * others).sum(0) / (count - 1).clamp(min=1)).sqrt()
    z = ((answers.float().cpu() * own.float().cpu()).sum(-1) - mean) / std.clamp(min=min_spread)
    return torch.where(count >= min_count, z, torch.full_like(z, float("nan")))


def relevance(answers: torch.Tensor, own: torch.Tensor, keys: torch.Tensor, ref_keys: torch.Tensor,
              ref_emb: torch.Tensor, ramp: tuple[float, float], min_others: int,
              min_spread: float = 0.01, impostors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(relevance, measured) per answer. Relevance in [0, 1]: how much closer the answer is to its own prompt's
    topic than to the other prompts' topics, calibrated without labels. z = (cos(answer, own topic) - mean over
    the other topics) / their std; relevance rises linearly from 0 at z = ramp[0] to 1 at z = ramp[1]. A
    prompt-independent answer is, by symmetry, no closer to its own topic than to the others (z ~ 0); an on-topic
    one stands out (docs/gaming.md has the distributions). Answers with fewer than ``min_others`` other prompts to
    compare with get 1 (unknown is not off-topic), and so do answers whose similarities to the other topics hardly
    differ (std < ``min_spread``: topics the encoder cannot tell apart make z noise); ``measured`` is False for
    both, so callers can say so. ``impostors``: ``impostor_z`` of the same answers; where it is known, z is the
    mean of the two (each alone lets ~10% of off-topic answers through on the audit corpus; the mean halves
    that). All embeddings unit-norm; callers pass the answers without their prompts' words (``prompt_free``), so
    that an echo of the prompt is not relevance."""
    n = answers.shape[0]
    if ref_emb.shape[0] == 0:
        return torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.bool)
    answers, own, ref_emb = answers.float().cpu(), own.float().cpu(), ref_emb.float().cpu()
    others = keys.cpu()[:, None] != ref_keys[None, :]  # [n, m]
    count = others.sum(-1)
    sims = answers @ ref_emb.T
    mean = (sims * others).sum(-1) / count.clamp(min=1)
    var = (((sims - mean[:, None]) ** 2) * others).sum(-1) / (count - 1).clamp(min=1)
    std = var.sqrt()
    z = ((answers * own).sum(-1) - mean) / std.clamp(min=min_spread)
    if impostors is not None:
        z = torch.where(torch.isnan(impostors), z, (z + impostors) / 2)
    rel = ((z - ramp[0]) / (ramp[1] - ramp[0])).clamp(0.0, 1.0)
    measurable = (count >= max(2, min_others)) & (std >= min_spread)
    return torch.where(measurable, rel, torch.ones_like(rel)).double(), measurable


def shared_across_prompts(emb: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor, threshold: float,
                          past_emb: torch.Tensor | None = None, past_keys: torch.Tensor | None = None) -> torch.Tensor:
    """[n] 1.0 where an answer is (near-)verbatim an answer to a *different* prompt (cosine >= threshold), in this
    batch or among ``past`` answers (the archive); else 0. Siblings of the same prompt do not count: that is what
    group diversity prices."""
    dev = emb.device  # where the archive lives too: only the [n] answer comes back
    emb, keys, valid = emb.float(), keys.to(dev), valid.to(dev).bool()
    pool_emb, pool_keys, pool_ok = emb, keys, valid
    if past_emb is not None and past_emb.shape[0]:
        pool_emb = torch.cat([emb, past_emb.to(dev).float()])
        pool_keys = torch.cat([keys, past_keys.to(dev)])
        pool_ok = torch.cat([valid, torch.ones(past_emb.shape[0], dtype=torch.bool, device=dev)])
    hit = ((emb @ pool_emb.T) >= threshold) & (keys[:, None] != pool_keys[None, :]) & pool_ok[None, :]
    return (hit.any(-1) & valid).double().cpu()


@lru_cache(maxsize=1)
def _language_identifier():
    """py3langid's model (shipped in the package; loaded once, on first use: 0.6 s)."""
    from py3langid import langid

    return langid.LanguageIdentifier.from_modelpath(langid.MODEL_DIR / langid.MODEL_FILE, norm_probs=True)


class LanguageCheck:
    """1 unless an answer is confidently in another language than allowed: its prompt's (``languages`` empty) or
    any of ``languages``. A translation of a sibling embeds far from it (MiniLM reads English: a French copy sat
    at cosine 0.33), so without this switching language pays every novelty term."""

    MIN_LETTERS = 12  # shorter answers are too short to tell (a name, a number): they pass
    FLOOR = 0.05  # an answer passes while its allowed languages keep this much probability

    def __init__(self, languages: list[str]):
        self.languages = [x.lower() for x in languages]
        self._prompt_language: LRU = LRU(4096)  # prompt key -> its language, or None
        self._answer_languages: LRU = LRU(4096)  # answer digest -> {language: probability >= 0.001}
        self._lock = threading.Lock()

    def __call__(self, texts: list[str], prompts: list[str], keys: list[int]) -> torch.Tensor:
        ident = _language_identifier()
        out = []
        for text, prompt, key in zip(texts, prompts, keys):
            if sum(ch.isalpha() for ch in text) < self.MIN_LETTERS:
                out.append(1.0)
                continue
            allowed = self.languages or [self._language_of(prompt, key)]
            if allowed == [None]:  # the prompt's own language is unclear: nothing to hold the answer to
                out.append(1.0)
                continue
            probs = self._languages_of(text, ident)
            out.append(float(sum(probs.get(x, 0.0) for x in allowed) >= self.FLOOR))
        return torch.tensor(out, dtype=torch.float64)

    def _languages_of(self, text: str, ident) -> dict[str, float]:
        """The languages the text may be in (cached: GRPO samples repeat, and ranking costs ~0.5 ms a text)."""
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()  # not the text: bounded
        with self._lock:
            known = self._answer_languages.hit(key)
        if known is None:
            known = {lang: p for lang, p in ident.rank(text) if p >= 0.001}
            with self._lock:
                self._answer_languages.put(key, known)
        return known

    def _language_of(self, prompt: str, key: int) -> str | None:
        """The prompt's language, or None when it is too short or mixed to say (cached per prompt)."""
        with self._lock:
            if key in self._prompt_language:
                return self._prompt_language.hit(key)
        lang, prob = _language_identifier().classify(prompt)
        if sum(ch.isalpha() for ch in prompt) < self.MIN_LETTERS or prob < 0.5:
            lang = None
        with self._lock:
            self._prompt_language.put(key, lang)
        return lang


def letter_grams(text: str, n: int = 8) -> set[int]:
    """The text's letter n-grams, everything but letters dropped and case folded ("sma rtphone" and "sma-rtphone"
    are "smartphone"), hashed with Python's hash (compared within one call, never saved). A copy with its words
    split by spaces or any separator shares no word shingle with its source and embeds far from it (an
    adversary's review: +0.5 over an exact copy); its letters are the source's."""
    letters = "".join(ch for ch in text.lower() if ch.isalpha())
    return {hash(letters[i:i + n]) for i in range(len(letters) - n + 1)}


def shingles(text: str, n: int = 3) -> list[int]:
    """Stable 63-bit hashes of the text's word n-grams (saved in the state, so not Python's salted hash())."""
    words = text.split()
    grams = {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}
    return sorted(int.from_bytes(hashlib.blake2b(g.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                 "little") >> 1 for g in grams)


class TemplateMemory:
    """The word 3-shingles of recent answers (prompt words removed), each with the prompts it was given to: one
    template with a per-prompt tail ("... especially when it comes to old smartphones") shares almost all of
    them across prompts, while embeddings put such answers only at cosine ~0.7. Bounded (least recently seen
    shingles dropped); kept whatever archive.weight is."""

    OWNERS = 4  # prompts remembered per shingle: "another prompt had it" needs two
    MIN_SHINGLES = 4  # fewer say too little to call an answer a template

    def __init__(self, size: int):
        self.size = size
        self._owners: LRU = LRU(size)  # shingle hash -> the last prompts that had it
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._owners)

    def shared(self, sets: list[list[int]], keys: list[int], threshold: float) -> torch.Tensor:
        """[n] 1.0 where at least ``threshold`` of an answer's shingles were given to another prompt, in this batch
        (``sets`` with ``keys``) or before; else 0."""
        batch: dict[int, set[int]] = {}
        for s, k in zip(sets, keys):
            for h in s:
                batch.setdefault(h, set()).add(k)
        out = []
        with self._lock:
            for s, k in zip(sets, keys):
                if len(s) < self.MIN_SHINGLES:
                    out.append(0.0)
                    continue
                elsewhere = sum(1 for h in s if (batch[h] | set(self._owners.get(h, ()))) - {k})
                out.append(float(elsewhere >= threshold * len(s)))
        return torch.tensor(out, dtype=torch.float64)

    def add(self, sets: list[list[int]], keys: list[int]) -> None:
        with self._lock:
            for s, k in zip(sets, keys):
                for h in s:
                    owners = tuple(o for o in self._owners.pop(h, ()) if o != k)
                    self._owners.put(h, (owners + (k,))[-self.OWNERS:])

    def state_dict(self) -> dict:
        with self._lock:
            hashes = list(self._owners)
            owners = torch.full((len(hashes), self.OWNERS), -1, dtype=torch.int64)
            for i, h in enumerate(hashes):
                row = self._owners[h]
                owners[i, :len(row)] = torch.tensor(row, dtype=torch.int64)
            return {"hashes": torch.tensor(hashes, dtype=torch.int64), "owners": owners}

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            self._owners = LRU(self.size)
            self._owners.update((int(h), tuple(int(o) for o in row if o >= 0))
                                for h, row in zip(state["hashes"], state["owners"]))
            self._owners.trim()


class CommonWords:
    """The most frequent words of the answers learned from (a language's function words, whatever the
    language): prose uses them in a quarter or more of its words (on the audit corpus no honest answer under
    0.17), word salad and letter junk almost never (under 0.1). Bounded; saved with the state."""

    TOP = 100  # the words that count as common
    KEEP = 20_000  # distinct words counted (the rarest dropped past twice that)
    MIN_WORDS = 2_000  # words seen before fluency is measured (1 until then)
    RAMP = (0.08, 0.16)  # fluency rises from 0 to 1 as the share of common words goes from lo to hi
    # The same read without the prompt's words (embed.text prompt_free), which are often common words: on the audit
    # corpus honest answers' share is at least 0.125 there (5% quantile 0.158; read whole 0.215 and 0.25).
    FREE_RAMP = (0.04, 0.12)

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self.total = 0
        self._top: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def fluency(self, texts: list[str], ramp: tuple[float, float] | None = None) -> torch.Tensor:
        """[n] in [0, 1]; 1 before the warm-up, for texts of under 4 words, and for texts mostly in a script
        written without spaces (their words are not split here). ``ramp``: RAMP unless given."""
        with self._lock:
            top, warm = self._top, self.total >= self.MIN_WORDS
        out = []
        lo, hi = ramp or self.RAMP
        for t in texts:
            words = _WORD.findall(t.lower())
            if not warm or len(words) < 4 or 2 * len(_CJK.findall(t)) >= sum(ch.isalpha() for ch in t):
                out.append(1.0)
                continue
            share = sum(w in top for w in words) / len(words)
            out.append(min(1.0, max(0.0, (share - lo) / (hi - lo))))
        return torch.tensor(out, dtype=torch.float64)

    def add(self, texts: list[str]) -> None:
        with self._lock:
            for t in texts:
                words = _WORD.findall(t.lower())
                self.counts.update(words)
                self.total += len(words)
            if len(self.counts) > 2 * self.KEEP:
                self.counts = Counter(dict(self.counts.most_common(self.KEEP)))
            self._top = frozenset(w for w, _ in self.counts.most_common(self.TOP))

    def state_dict(self) -> dict:
        with self._lock:
            words = list(self.counts)
            return {"words": words, "counts": torch.tensor([self.counts[w] for w in words], dtype=torch.int64),
                    "total": self.total}

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            self.counts = Counter(dict(zip(state["words"], state["counts"].tolist())))
            self.total = int(state["total"])
            self._top = frozenset(w for w, _ in self.counts.most_common(self.TOP))
