"""Cheap quality conditions that novelty cannot buy: the answer is about its prompt, is not degenerate, and is not
the same answer given to other prompts.

Each one closes a way a policy paid for novelty has been seen to cheat (see the README's "How the reward can be
gamed"): drifting off topic into an unvisited region of embedding space, repeating a token or writing almost
nothing (odd texts embed far from everything), and one prompt-independent answer for every prompt.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from openrlhf_novelty.metrics import ngrams, tokens


def repeat_share(text: str, n: int = 3) -> float:
    """The share of the text's word n-grams that repeat an earlier one (0 for ordinary prose, ~1 for 'HIP HIP ...')."""
    grams = ngrams(tokens(text), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def nondegenerate(texts: list[str], min_words: int, max_repeat: float) -> torch.Tensor:
    """Per text in [0, 1]: 0 under ``min_words`` words or with a repeated-trigram share >= ``max_repeat``, 1 at or
    below half that share, linear between (a refrain is fine, a loop is not)."""
    out = []
    for t in texts:
        if len(tokens(t)) < max(1, min_words):
            out.append(0.0)
            continue
        r = repeat_share(t)
        out.append(1.0 if max_repeat >= 1 else min(1.0, max(0.0, 2.0 * (max_repeat - r) / max_repeat)))
    return torch.tensor(out, dtype=torch.float64)


class PromptMemory:
    """The embeddings of the most recent distinct prompts (bounded, least recently seen dropped): the reference an
    answer's relevance is measured against. Per-sample hosts (OpenRLHF's reward file) see one prompt per call, so
    the other prompts of a batch come from here."""

    def __init__(self, size: int):
        self.size = size
        self._emb: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._emb)

    def lookup(self, keys: list[int], prompts: list[str], encode) -> torch.Tensor:
        """[len(keys), dim] embeddings of these prompts; only prompts not remembered are encoded (once each)."""
        with self._lock:
            known = {k: self._emb[k] for k in keys if k in self._emb}  # another thread may evict them meanwhile
        missing = {k: p for k, p in zip(keys, prompts) if k not in known}
        if missing:
            known.update(zip(missing, encode(list(missing.values())).float().cpu()))
        if not keys:
            return torch.zeros(0, 0)
        with self._lock:
            for k in keys:
                self._emb[k] = known[k]
                self._emb.move_to_end(k)
            while len(self._emb) > self.size:
                self._emb.popitem(last=False)
        return torch.stack([known[k] for k in keys])

    def reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys [m], embeddings [m, dim]) of every remembered prompt."""
        with self._lock:
            if not self._emb:
                return torch.zeros(0, dtype=torch.int64), torch.zeros(0, 0)
            return torch.tensor(list(self._emb), dtype=torch.int64), torch.stack(list(self._emb.values()))

    def state_dict(self) -> dict:
        keys, emb = self.reference()
        return {"keys": keys, "emb": emb}

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            self._emb = OrderedDict((int(k), e.float().clone()) for k, e in zip(state["keys"], state["emb"]))


def relevance(answers: torch.Tensor, own: torch.Tensor, keys: torch.Tensor, ref_keys: torch.Tensor,
              ref_emb: torch.Tensor, ramp: tuple[float, float], min_others: int,
              min_spread: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(relevance, measured) per answer. Relevance in [0, 1]: how much closer it is to its own prompt than to the other prompts, calibrated without
    labels. z = (cos(answer, own prompt) - mean over other prompts) / their std; relevance rises linearly from 0 at
    z = ramp[0] to 1 at z = ramp[1]. A prompt-independent answer is, by symmetry, no closer to its own prompt than
    to the others (z ~ 0); an on-topic one stands out (z ~ 2.4 for SmolLM2's answers to the shipped prompt kinds,
    against ~-0.3 for the same answers paired with another prompt: BENCHMARKS.md). Answers with fewer than
    ``min_others`` other prompts to compare with get 1 (unknown is not off-topic), and so do answers whose
    similarities to the other prompts hardly differ (std < ``min_spread``: prompts the encoder cannot tell apart,
    e.g. a long shared prefix, make z noise); ``measured`` is False for both, so callers can say so. All embeddings
    unit-norm."""
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
