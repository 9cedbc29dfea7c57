"""GRPO pressure: where a policy goes when it is trained on the reward over honest answers and their attacks.

A small gain per answer is not small for GRPO: group normalization turns any consistent edge into unit-size
advantages, so an attack that pays a little more than the answer it copies grows step after step. This simulates
that directly: per prompt, a softmax policy over a fixed set of candidates (its honest answers, and every attack's
variant of each), sampling GRPO groups, advantages ``(r - mean) / std`` within the group, and a policy-gradient step
on the logits; the real reward scores the groups, and RND and the archive learn after every step as in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from openrlhf_novelty.attacks import Attack, Context, topic_words
from openrlhf_novelty.reward import NoveltyReward


@dataclass
class Candidate:
    text: str
    kind: str  # "honest", or the attack's kind (off-topic, echo, surface, ...)
    family: str  # "honest", "worse" or "copy"
    attack: str  # "" for honest answers
    idea: int  # the honest answer it is (honest) or copies (copy family); -1 for a worse answer


def candidates(prompt: str, honest: list[dict], prompts: list[str], other: str, vocabulary: list[str],
               attacks: tuple[Attack, ...], rewrite=None, view=None) -> list[Candidate]:
    """The honest answers of one prompt and, for each, every attack's variant of it. ``view`` (text -> what the
    reward reads): a variant the reward reads exactly as an earlier candidate is that candidate (a copy in emoji
    is its clean answer once normalized), so it is left out: the policy could not prefer one over the other, and
    twelve identical copies of each idea would only crowd each other out of every group."""
    out = [Candidate(r["response"], "honest", "honest", "", k) for k, r in enumerate(honest)]
    seen = {view(c.text) if view else c.text for c in out}
    for k, r in enumerate(honest):
        ctx = Context(prompt=prompt, honest=r["response"], siblings=[h["response"] for h in honest if h is not r],
                      other_answer=other, topic=topic_words(prompt, prompts), vocabulary=vocabulary,
                      variants=r.get("variants") or {}, rewrite=rewrite)
        for a in attacks:
            text = a.make(ctx)
            if text and (view(text) if view else text) not in seen:
                seen.add(view(text) if view else text)
                out.append(Candidate(text, a.kind, a.family, a.name, k if a.family == "copy" else -1))
    return out


def simulate(model: NoveltyReward, pools: dict[str, list[Candidate]], steps: int, group_size: int,
             lr: float = 1.0, seed: int = 0, progress=None) -> dict:
    """Train one softmax policy per prompt for ``steps`` GRPO steps on ``model``'s reward (which learns as it goes);
    return the starting and final probability mass per attack kind, per copy attack against its clean source, and
    the effective number of honest ideas."""
    gen = torch.Generator().manual_seed(seed)
    prompts = list(pools)
    logits = {p: torch.zeros(len(pools[p]), dtype=torch.float64) for p in prompts}
    start = _masses(pools, logits, group_size)
    for _ in range(steps):
        picks = {p: torch.multinomial(logits[p].softmax(0), group_size, replacement=True, generator=gen)
                 for p in prompts}
        batch_prompts = [p for p in prompts for _ in range(group_size)]
        texts = [pools[p][int(i)].text for p in prompts for i in picks[p]]
        scored = model.score(batch_prompts, texts, group_size)
        rewards = torch.tensor(scored.rewards, dtype=torch.float64).view(len(prompts), group_size)
        adv = (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + 1e-9)  # OpenRLHF's group_norm
        for row, p in enumerate(prompts):
            probs = logits[p].softmax(0)
            grad = torch.zeros_like(probs)
            for a, i in zip(adv[row], picks[p]):  # d log pi(i) / d logits = onehot(i) - pi
                grad[int(i)] += a
                grad -= a * probs
            logits[p] += lr * grad / group_size
        model.update(scored)
        if progress is not None:
            progress.update(1)
    return {"start": start, "end": _masses(pools, logits, group_size), "steps": steps, "lr": lr,
            "group_size": group_size}


def _masses(pools: dict[str, list[Candidate]], logits: dict[str, torch.Tensor], group_size: int = 4) -> dict:
    """Mean over prompts of the mass per kind; per copy attack, its mass against its clean source's; the effective
    number of honest ideas: exp of the entropy of the mass per idea (a copy counting for the idea it copies), times
    the share of the mass on honest answers and their copies at all. Without that share, a policy that has moved
    to junk would keep the spread of its leftover honest mass, which no step touched: 4 ideas from 1% of its mass.
    ``ideas_among_honest`` is the entropy term alone; ``ideas_without_copies`` the count with the honest answers
    alone (a rewording is its idea, but a policy that moved to rewordings keeps few of the answers as written);
    ``ideas_per_group`` the expected number of distinct ideas in a group of ``group_size`` samples (what GRPO
    compares; worse answers are no idea); ``top`` the mass of each prompt's likeliest candidate (1 = collapsed onto
    one answer)."""
    kinds: dict[str, float] = {}
    attacks: dict[str, float] = {}
    copies: dict[str, list[tuple[float, float]]] = {}
    ideas, among, bare, per_group, tops = [], [], [], [], []
    for p, pool in pools.items():
        probs = logits[p].softmax(0).tolist()
        per_idea: dict[int, float] = {}
        clean = {c.idea: probs[i] for i, c in enumerate(pool) if c.family == "honest"}
        for c, m in zip(pool, probs):
            kinds[c.kind] = kinds.get(c.kind, 0.0) + m / len(pools)
            attacks[c.attack or "honest"] = attacks.get(c.attack or "honest", 0.0) + m / len(pools)
            if c.family in ("honest", "copy"):
                per_idea[c.idea] = per_idea.get(c.idea, 0.0) + m
            if c.family == "copy":
                copies.setdefault(c.attack, []).append((m, clean[c.idea]))
        total, spread = _spread(per_idea)
        among.append(spread)
        ideas.append(total * spread)
        written, written_spread = _spread(clean)
        bare.append(written * written_spread)
        per_group.append(sum(1.0 - (1.0 - m) ** group_size for m in per_idea.values()))
        tops.append(max(probs))
    n = len(pools)
    return {"kinds": kinds, "attacks": attacks, "effective_ideas": sum(ideas) / n,
            "ideas_among_honest": sum(among) / n, "ideas_without_copies": sum(bare) / n,
            "ideas_per_group": sum(per_group) / n, "top": sum(tops) / n,
            "copies": {a: _paired(v) for a, v in copies.items()}}


def _spread(masses: dict[int, float]) -> tuple[float, float]:
    """(the total mass, exp of the entropy of its shares): the effective number of ideas it is spread over."""
    total = sum(masses.values())
    if total <= 0:
        return 0.0, 0.0
    return total, math.exp(-sum(v / total * math.log(v / total) for v in masses.values() if v > 0))


def _paired(pairs: list[tuple[float, float]]) -> dict:
    """A copy attack's mass against its clean sources' over (prompt, idea) pairs, with the standard error of the
    mean difference: a copy the reward cannot tell from its source drifts above or below it by chance alone."""
    diffs = [m - c for m, c in pairs]
    mean = sum(diffs) / len(diffs)
    se = (sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1) / len(diffs)) ** 0.5
    return {"mass": sum(m for m, _ in pairs) / len(pairs), "clean_mass": sum(c for _, c in pairs) / len(pairs),
            "above_clean": sum(d > 0 for d in diffs) / len(diffs), "diff_se": se}
