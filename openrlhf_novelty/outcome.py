"""The outcome term: how rarely this final answer has been given to this prompt (outcome-based exploration).

Song, Kempe and Munos (2025) reward a reasoning policy for final answers it rarely reaches: a historical UCB-style
bonus 1/sqrt(1 + N), N the times the answer was seen for the question in training, and a batch term against answers
repeated within the current group. Embeddings of two long solutions can be near each other while their answers
differ, or far apart while they agree; counting the answer itself cannot be fooled by rewording the reasoning.

    outcome = (1 - b) / sqrt(1 + N(prompt, answer))  +  b * (1 - (m - 1) / (k - 1))

with b = outcome.batch_weight, m the eligible members of the group giving this answer (itself included) and k the
group's eligible members that give an answer (the batch part is 1 when k = 1). No answer found: 0. Like every novelty term it is paid
through the quality gate, so a rare wrong answer earns nothing.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading

import torch

from openrlhf_novelty.bounded import LRU

_LATEX_NOISE = re.compile(r"\\(?:left|right|displaystyle|!|,|;|:| )|\$")
_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_SQRT = re.compile(r"\\sqrt\s*\{([^{}]*)\}")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?")
_PUNCT = re.compile(r"[^\w\s]")


def boxes(text: str) -> list[str] | None:
    r"""The contents of every top-level \boxed{...} / \fbox{...}, braces balanced, in order; None when one is
    malformed (no brace right after it, or unbalanced): no answer rather than a guess. One pass over the text: a
    box inside a box is part of the outer box's answer."""
    found, end = [], 0
    for m in re.finditer(r"\\(?:boxed|fbox)\s*", text):
        if m.start() < end:
            continue
        i = m.end()
        if i >= len(text) or text[i] != "{":
            return None  # "\boxed 9{x}": not a box a reader can trust
        depth = 0
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                found.append(text[i + 1:j])
                end = j
                break
        else:
            return None
    return found


def normalize_math(answer: str) -> str:
    r"""A math answer in one form: LaTeX spacing and wrappers removed, \frac{a}{b} as a/b, a number (or a ratio of
    two) as its value, so '\dfrac{1}{2}', '1/2', '0.5' and '0.50' are one answer."""
    s = _LATEX_NOISE.sub("", answer).replace("\u2212", "-")  # a Unicode minus is a minus
    s = re.sub(r"(?<=\d)_(?=\d)", "", s)  # Python reads 1_5 as 15, so must we
    for _ in range(3):  # nested wrappers and fractions
        s = _WRAPPER.sub(r"\1", s)
        s = _FRAC.sub(r"(\1)/(\2)", s)
        s = _SQRT.sub(r"sqrt(\1)", s)
    s = re.sub(r"\^\{?\\circ\}?|°", "", s).replace("\\%", "").replace("%", "")
    s = "".join(s.split()).rstrip(".").lower()
    s = re.sub(r"\^\{([^{}]*)\}", r"**(\1)", s).replace("^", "**")  # 2^{3} and 2^3 are one power
    for _ in range(3):  # brackets around a single atom say nothing: (sqrt(3))/(2) is sqrt3/2, {4} is 4
        s = re.sub(r"[({]([\w.]+)[)}]", r"\1", s)
    s = re.sub(r"^[a-z]\s*=", "", s)  # "x = 3" is the answer 3
    # A number with a unit word is the number: "3 apples" and "3" are one answer, or a policy could vary units.
    s = re.sub(r"^([-+]?[\d.,/]+)[a-z]+$", r"\1", s)
    if re.fullmatch(r"[-+]?\d{1,4000}", s):  # an integer exactly: a float would merge 2**40 + 1 with 2**40
        return str(int(s))
    value = _number(s)
    if value is None:
        return s
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))  # 4.0, 8/2 and 4e0 are 4 (and -0 is 0)
    return repr(value)  # the shortest form that reads back as the same float


def _number(s: str) -> float | None:
    parts = s.split("/") if s.count("/") == 1 else [s]
    values = []
    for p in parts:
        if not _NUMBER.fullmatch(p):
            return None
        values.append(float(p.replace(",", "")))
    if len(values) == 2:
        return values[0] / values[1] if values[1] else None
    return values[0] if math.isfinite(values[0]) else None


def normalize_text(answer: str) -> str:
    """A free-text answer with case, spacing and punctuation folded (and a leading article dropped)."""
    s = " ".join(_PUNCT.sub(" ", answer.casefold()).split())
    return re.sub(r"^(?:the|a|an) ", "", s)


def final_answer(text: str, how: str) -> str | None:
    r"""The normalised final answer of an (extracted) text, or None when it gives none. ``how``: ``boxed`` (its
    \boxed{} answer, normalised as math; boxes that disagree are none), ``text`` (the whole text, folded) or a regex (group 1 if it has one, else the
    match; the last match wins, folded, and normalised as math when it reads as a number)."""
    if not text:
        return None
    if how == "boxed":  # every box must give the same answer: a second box is no second answer to count
        found = {normalize_math(b) for b in boxes(text) or [] if b.strip()}
        return found.pop() if len(found) == 1 else None
    if how == "text":
        return normalize_text(text) or None
    matches = list(re.finditer(how, text))
    if not matches:
        return None
    m = matches[-1]
    found = m.group(1) if m.re.groups else m.group(0)
    folded = normalize_math(found) if found and _number(normalize_math(found)) is not None else normalize_text(found or "")
    return folded or None


def _hash(answer: str) -> int:
    return int.from_bytes(hashlib.blake2b(answer.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little", signed=True)


class OutcomeMemory:
    """Per prompt, how often each final answer was seen in training: at most ``prompts`` prompts, each with its
    ``answers`` most recent distinct answers (a forgotten answer counts as new again). Answers are kept as 64-bit
    hashes, so memory is bounded whatever the answers' length."""

    def __init__(self, prompts: int, answers: int):
        self.prompts, self.answers = prompts, answers
        self._counts = LRU(prompts)  # prompt key -> LRU(answer hash -> times seen)
        self._lock = threading.Lock()

    def count(self, key: int, answer: str) -> int:
        with self._lock:
            per = self._counts.get(key)
            return per.get(_hash(answer), 0) if per is not None else 0

    def add(self, keys: list[int], answers: list[str | None]) -> None:
        with self._lock:
            for key, answer in zip(keys, answers):
                if answer is not None:
                    per, h = self._answers_of(key), _hash(answer)
                    per.put(h, per.get(h, 0) + 1)

    def __len__(self) -> int:
        return len(self._counts)

    def state_dict(self) -> dict:
        with self._lock:
            rows = [(k, h, c) for k, per in self._counts.items() for h, c in per.items()]
            return {"keys": torch.tensor([r[0] for r in rows], dtype=torch.int64),
                    "hashes": torch.tensor([r[1] for r in rows], dtype=torch.int64),
                    "counts": torch.tensor([r[2] for r in rows], dtype=torch.int64)}

    def load_state_dict(self, state: dict) -> None:
        with self._lock:  # rows are in recency order, oldest first, so replaying them restores the order too
            self._counts = LRU(self.prompts)
            for k, h, c in zip(state["keys"].tolist(), state["hashes"].tolist(), state["counts"].tolist()):
                self._answers_of(k).put(h, c)

    def _answers_of(self, key: int) -> LRU:
        """The answer counts of a prompt, now its most recent (created when new); the caller holds the lock."""
        per = self._counts.hit(key)
        if per is None:
            per = LRU(self.answers)
            self._counts.put(key, per)
        return per


def outcome_term(answers: list[str | None], keys: list[int], eligible: torch.Tensor, group_size: int,
                 memory: OutcomeMemory, batch_weight: float) -> torch.Tensor:
    """The outcome term per sample (module docstring), [n] float64."""
    out = torch.zeros(len(answers), dtype=torch.float64)
    ok = eligible.tolist()
    for start in range(0, len(answers), group_size):
        group = [(i, answers[i]) for i in range(start, start + group_size) if ok[i] and answers[i] is not None]
        k = len(group)
        for i, a in group:
            history = 1.0 / math.sqrt(1.0 + memory.count(keys[i], a))
            batch = 1.0 if k == 1 else 1.0 - (sum(b == a for _, b in group) - 1) / (k - 1)
            out[i] = (1.0 - batch_weight) * history + batch_weight * batch
    return out
