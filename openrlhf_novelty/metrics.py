"""Diversity and quality metrics for a prompt's k samples: what users report next to training curves.

Lexical: distinct-n, self-BLEU (sacrebleu), n-gram Vendi score. Semantic (on unit-norm sentence embeddings): mean
pairwise cosine distance, embedding Vendi score, number of semantic clusters, novelty against a reference bank.
All functions take one prompt's samples; ``summarize`` averages them over prompts.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import torch

from openrlhf_novelty.diversity import knn_distance, same_cluster

_WORD = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(toks: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float | None:
    """Unique n-grams / all n-grams over the samples (Li et al. 2016); None (undefined) when there is no n-gram."""
    grams = [g for t in texts for g in ngrams(tokens(t), n)]
    return len(set(grams)) / len(grams) if grams else None


def self_bleu(texts: list[str]) -> float:
    """Mean sentence BLEU of each sample against the others, in [0, 1] (1 = all the same). Needs 2+ samples."""
    if len(texts) < 2:
        return 0.0
    from sacrebleu.metrics import BLEU

    bleu = BLEU(effective_order=True)
    scores = [bleu.sentence_score(t, texts[:i] + texts[i + 1:]).score for i, t in enumerate(texts)]
    return sum(scores) / len(scores) / 100.0


def vendi(kernel: torch.Tensor) -> float:
    """Vendi score (Friedman & Dieng 2023): exp of the Shannon entropy of the eigenvalues of K / n.

    K is a similarity matrix with ones on the diagonal. It is the effective number of distinct samples: 1 when all
    are identical, n when all are orthogonal.
    """
    n = kernel.shape[0]
    if n == 0:
        return 0.0
    eig = torch.linalg.eigvalsh(kernel.double() / n).clamp(min=0.0)
    eig = eig[eig > 1e-12]
    return float(torch.exp(-(eig * eig.log()).sum()))


def embedding_vendi(emb: torch.Tensor) -> float:
    return vendi((emb @ emb.T).clamp(min=0.0))


def ngram_vendi(texts: list[str], n: int = 2) -> float:
    """Vendi score with the cosine similarity of n-gram count vectors as the kernel."""
    counts = [Counter(ngrams(tokens(t), n)) for t in texts]
    vocab = {g: i for i, g in enumerate(sorted({g for c in counts for g in c}))}
    if not vocab:
        return 1.0 if texts else 0.0
    m = torch.zeros(len(texts), len(vocab), dtype=torch.float64)
    for row, c in enumerate(counts):
        for g, v in c.items():
            m[row, vocab[g]] = v
    m = torch.nn.functional.normalize(m, dim=-1)
    k = m @ m.T
    k.fill_diagonal_(1.0)  # an empty sample is still identical to itself
    return vendi(k)


def mean_pairwise_distance(emb: torch.Tensor) -> float:
    n = emb.shape[0]
    if n < 2:
        return 0.0
    dist = (1.0 - emb @ emb.T).clamp(0.0, 2.0)
    return float(dist.sum() / (n * (n - 1)))


def semantic_clusters(emb: torch.Tensor, threshold: float = 0.85) -> int:
    """Number of groups of near-identical meaning (NoveltyBench-style distinct@k): transitive clusters at cos >= t."""
    if emb.shape[0] == 0:
        return 0
    linked = same_cluster(emb @ emb.T, threshold)
    return len({tuple(row.tolist()) for row in linked})


# Thresholds the evaluation sweeps the semantic-cluster count over: one fixed 0.85 saturates at k of k for a small
# model's varied answers and at 1 for a collapsed large one; the curve tells the two regimes apart.
CLUSTER_SWEEP = (0.6, 0.7, 0.8, 0.9, 0.95)


def bank_novelty(emb: torch.Tensor, bank: torch.Tensor) -> float:
    """Mean over samples of 1 - similarity to the closest known answer."""
    return float(knn_distance(emb, bank, 1).mean()) if emb.shape[0] else 0.0


def pass_at_k(correct: list[bool]) -> float:
    """1 if any of the prompt's k samples is correct (the estimator for n = k)."""
    return 1.0 if any(correct) else 0.0


def prompt_metrics(texts: list[str], emb: torch.Tensor, threshold: float = 0.85,
                   bank: torch.Tensor | None = None) -> dict[str, float]:
    """Every diversity metric for one prompt's samples (an undefined one, like distinct-4 of 3-word answers, is left
    out rather than counted as 0, so it does not drag the average over prompts)."""
    out = {f"distinct_{n}": d for n in (1, 2, 3, 4) if (d := distinct_n(texts, n)) is not None}
    out.update(
        self_bleu=self_bleu(texts),
        pairwise_distance=mean_pairwise_distance(emb),
        vendi_embedding=embedding_vendi(emb),
        vendi_ngram=ngram_vendi(texts, 2),
        semantic_clusters=float(semantic_clusters(emb, threshold)),
    )
    out.update({f"semantic_clusters@{t:.2f}": float(semantic_clusters(emb, t)) for t in CLUSTER_SWEEP})
    if bank is not None:
        out["bank_novelty"] = bank_novelty(emb, bank)
    return out


def summarize(per_prompt: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over prompts (metrics missing for a prompt are averaged over the prompts that have it)."""
    keys = sorted({k for m in per_prompt for k in m})
    out = {}
    for k in keys:
        values = [m[k] for m in per_prompt if k in m and not math.isnan(m[k])]
        out[k] = sum(values) / len(values) if values else float("nan")
    return out
