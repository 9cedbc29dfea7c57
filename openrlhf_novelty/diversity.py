"""Episodic and memory novelty on unit-norm embeddings: within a prompt's group, against an archive, against a bank.

Distances are cosine distances ``1 - cos`` clamped to [0, 1] (sentence embeddings are almost never anti-parallel,
and a bounded term is easier to weigh against quality).
"""

from __future__ import annotations

import hashlib

import torch


def group_diversity(emb: torch.Tensor, mode: str = "mean", threshold: float = 0.85,
                    eligible: torch.Tensor | None = None, lam: float = 0.01,
                    classes: torch.Tensor | None = None, duplicate: float = 2.0,
                    sims: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample diversity inside each group; ``emb`` is [groups, n, dim], the result [groups, n].

    mean: mean distance to the siblings. min: distance to the nearest sibling (a duplicate scores 0 even in an
    otherwise varied group). partition: siblings with cosine >= threshold are linked, linked samples form clusters
    (transitively), and diversity is the share of siblings outside the sample's cluster (DARLING's rule).
    elliptical: RepExp's bonus, sqrt(e_i' (lam I + sum_j e_j e_j')^-1 e_i) over the siblings j, times sqrt(lam) so
    it lies in [0, 1] (``elliptical``). A group of one is the whole batch for RepExp's batch scope.
    judge: partition's rule on ``classes`` [groups, n] (an equivalence class label per sample, from the LLM judge:
    ``Judge.partition_many``) instead of the embedding clusters.
    ``eligible`` [groups, n] (default all): only eligible samples count as siblings -- an empty or failed answer is
    not an idea, and counting its distance would pay the others for their siblings' failures. A sample with no
    eligible sibling scores 0. ``duplicate`` (mean, min): siblings at cosine >= it are copies of one idea, so the
    distance counts only beyond it, rescaled to [0, 1]: max(0, duplicate - cos) / duplicate (a paraphrase or a
    dressed-up copy adds nothing; > 1 = plain cosine distance). ``sims`` [g, n, n] (mean, min): the pairs'
    similarity if not the cosine (``idea_similarity``: a padded copy is its source's wording, and must not lend
    its source the distance its padding puts between them). This is the one implementation: the hook, the
    streaming reward and TRL all call it.
    """
    g, n, _ = emb.shape
    if eligible is None:
        eligible = torch.ones(g, n, dtype=torch.bool, device=emb.device)
    eligible = eligible.to(emb.device).bool()
    if mode == "elliptical":  # no n x n masks here: the batch scope is one group of the whole rollout batch
        count = eligible.sum(-1, keepdim=True) - eligible.long()
        out = elliptical(emb, eligible, lam)
        return torch.where(count > 0, out, torch.zeros_like(out)).to(emb.dtype)
    eye = torch.eye(n, dtype=torch.bool, device=emb.device)
    sibling = eligible[:, None, :] & ~eye  # [g, i, j]: j counts as a sibling of i
    count = sibling.sum(-1)
    if sims is None or mode not in ("mean", "min"):
        sims = emb @ emb.transpose(1, 2)
    if mode in ("partition", "judge"):
        if mode == "partition":
            classes = embedding_classes(emb, threshold, eligible)
        elif classes is None:
            raise ValueError("diversity mode judge needs the judge's classes")
        outside = sibling & (classes[:, :, None] != classes[:, None, :]).to(emb.device)
        out = outside.sum(-1).float() / count.clamp(min=1)
    elif mode in ("mean", "min"):
        dist = (1.0 - sims).clamp(0.0, 1.0) if duplicate > 1 else ((duplicate - sims) / duplicate).clamp(0.0, 1.0)
        if mode == "min":
            out = dist.masked_fill(~sibling, float("inf")).min(-1).values
        else:
            out = dist.masked_fill(~sibling, 0.0).sum(-1) / count.clamp(min=1)
    else:
        raise ValueError(f"diversity mode must be mean, min, partition, elliptical or judge, got {mode!r}")
    return torch.where(count > 0, out, torch.zeros_like(out)).to(emb.dtype)


def class_min(values: torch.Tensor, classes: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """[g, n] each eligible sample's value replaced by the lowest among the eligible members of its class (one
    idea earns what its least novel copy earns); ineligible samples keep theirs."""
    same = (classes[:, :, None] == classes[:, None, :]) & eligible[:, None, :].bool() & eligible[:, :, None].bool()
    low = values[:, None, :].expand(-1, values.shape[1], -1).masked_fill(~same, float("inf")).min(-1).values
    return torch.where(eligible.bool(), torch.minimum(values, low), values)


def elliptical(emb: torch.Tensor, eligible: torch.Tensor, lam: float) -> torch.Tensor:
    """[g, n] elliptical bonus of each of ``emb`` [g, n, dim] (unit rows) against the eligible others of its group,
    leave-one-out.

    b_i = sqrt(lam * e_i' A_i^-1 e_i), A_i = lam I + sum over eligible j != i of e_j e_j'. It is 1 for an answer
    orthogonal to every sibling, sqrt(1 - c^2 / (1 + lam)) beside one sibling at cosine c, and sqrt(lam / (lam + m))
    for m identical copies: how much of the answer lies outside the span of the others, so a blend of two siblings'
    ideas earns little even when it is far from each one (what mean distance pays for). In float64: A is
    ill-conditioned by design (lam small).

    Groups (n <= 64) in the n x n dual, all groups in one batched solve, by Woodbury: lam e' A_i^-1 e = |e|^2 -
    s' (lam I + S S')^-1 s with S the siblings and s = S e; non-siblings are masked out of the Gram matrix. A larger
    set (the batch scope) with one d x d solve for all, each sample left out by Sherman-Morrison: e' A_i^-1 e =
    q / (1 - q), q = e' A^-1 e with A over every eligible sample (q < 1 for those)."""
    e, ok = emb.double(), eligible.bool()
    g, n, d = e.shape
    if n <= 64:
        gram = e @ e.transpose(1, 2)  # [g, n, n]
        sib = ok[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=e.device)  # [g, i, j]
        both = (sib[:, :, :, None] & sib[:, :, None, :]).double()  # [g, i, j, k]: j and k both siblings of i
        k = lam * torch.eye(n, dtype=torch.float64, device=e.device) + gram[:, None] * both
        s = gram * sib.double()  # [g, i, j]
        fit = (s * torch.linalg.solve(k, s.unsqueeze(-1)).squeeze(-1)).sum(-1)
        return (gram.diagonal(dim1=1, dim2=2) - fit).clamp(0.0, 1.0).sqrt().to(emb.dtype)
    out = []
    for x, keep in zip(e, ok):  # the batch scope: one group
        kept = x[keep]
        a = lam * torch.eye(d, dtype=torch.float64, device=e.device) + kept.T @ kept
        q = (x * torch.linalg.solve(a, x.T).T).sum(-1)
        loo = torch.where(keep, q / (1.0 - q).clamp(min=1e-12), q)
        out.append((lam * loo).clamp(0.0, 1.0).sqrt())
    return torch.stack(out).to(emb.dtype)


def embedding_classes(emb: torch.Tensor, threshold: float, eligible: torch.Tensor | None = None,
                      sims: torch.Tensor | None = None) -> torch.Tensor:
    """[g, n] class labels (the first member's index) of ``emb`` [g, n, dim]: samples linked by a chain of pairs at
    cosine >= threshold share a class; an ineligible sample is a class of its own. ``sims`` [g, n, n]: the pairs'
    similarity, if not the embeddings' cosine (``idea_similarity``)."""
    g, n, _ = emb.shape
    linked = (emb @ emb.transpose(1, 2) if sims is None else sims) >= threshold
    if eligible is not None:
        linked = linked & eligible[:, :, None] & eligible[:, None, :]
    return same_cluster(torch.where(linked, 1.0, -1.0), 0.0).float().argmax(-1)


def idea_similarity(emb: torch.Tensor, shingles: list[list[int]], min_shingles: int = 4,
                    letters: list[set[int]] | None = None, min_letters: int = 16) -> torch.Tensor:
    """[g, n, n] similarity of each group's pairs for the near-duplicate check: the cosine of their embeddings, or,
    if more, how much of one answer's wording is inside the other: the share of its word 3-shingles the other has
    (answers with fewer than ``min_shingles`` are too short to tell), or of its letter 8-grams (``letters``,
    ``checks.letter_grams``; at least ``min_letters``). A sibling's copy with a long preface or appendix embeds
    far from it (cosine 0.70 measured: an embedding averages what it reads) while all of its wording is the
    sibling's: by the cosine alone it passed as a new idea and took the whole diversity bonus; a copy with its
    words split apart shares no word shingle but every letter."""
    g, n, _ = emb.shape
    wordings = [([set(s) for s in shingles], min_shingles)]
    if letters is not None:
        wordings.append((letters, min_letters))
    inside = torch.zeros(g, n, n)  # [i, j]: the share of i's wording found in j (built on the CPU: no syncs)
    for sets, least in wordings:
        for gi in range(g):
            group = sets[gi * n:(gi + 1) * n]
            for i in range(n):
                if len(group[i]) >= least:
                    for j in range(n):
                        if i != j:
                            inside[gi, i, j] = max(float(inside[gi, i, j]), len(group[i] & group[j]) / len(group[i]))
    inside = inside.maximum(inside.transpose(1, 2)).to(emb.device, emb.dtype)
    return (emb @ emb.transpose(1, 2)).maximum(inside)


def same_cluster(sims: torch.Tensor, threshold: float) -> torch.Tensor:
    """[..., n, n] bool: i and j are linked by a chain of pairs with cosine >= threshold (transitive clusters)."""
    n = sims.shape[-1]
    linked = (sims >= threshold) | torch.eye(n, dtype=torch.bool, device=sims.device)
    # Transitive closure by repeated squaring of the boolean reachability matrix: log2(n) steps.
    for _ in range(max(1, (n - 1).bit_length())):
        linked = (linked.float() @ linked.float()) > 0
    return linked


def knn_distance(queries: torch.Tensor, keys: torch.Tensor, k: int, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Mean distance from each query to its k nearest keys; 1.0 (fully novel) where there is no key to compare with.

    ``allowed`` [queries, keys] restricts which keys each query may use (per-prompt archives).
    """
    if keys.shape[0] == 0:
        return queries.new_ones(queries.shape[0])
    sims = queries @ keys.T
    if allowed is not None:
        sims = sims.masked_fill(~allowed, float("-inf"))
    top = sims.topk(min(k, keys.shape[0]), dim=-1).values
    valid = torch.isfinite(top)
    dist = (1.0 - top).clamp(0.0, 1.0).masked_fill(~valid, 0.0)
    count = valid.sum(-1)
    return torch.where(count > 0, dist.sum(-1) / count.clamp(min=1), torch.ones_like(dist[:, 0]))


def prompt_key(prompt: str) -> int:
    """A stable 63-bit key for a prompt (Python's hash() is salted per process, useless in saved state)."""
    digest = hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class Archive:
    """A fixed-size ring buffer of past embeddings (and their prompt keys); memory never grows past ``size``."""

    def __init__(self, size: int, dim: int, device: str = "cpu"):
        self.emb = torch.zeros(size, dim, device=device)
        self.keys = torch.zeros(size, dtype=torch.int64, device=device)
        self.count = 0  # entries filled, <= size
        self.pos = 0  # next slot to write

    def __len__(self) -> int:
        return self.count

    def add(self, emb: torch.Tensor, keys: torch.Tensor) -> None:
        size = self.emb.shape[0]
        emb, keys = emb[-size:].to(self.emb.device), keys[-size:].to(self.emb.device)
        idx = (self.pos + torch.arange(emb.shape[0], device=self.emb.device)) % size
        self.emb[idx], self.keys[idx] = emb, keys
        self.pos = (self.pos + emb.shape[0]) % size
        self.count = min(size, self.count + emb.shape[0])

    def novelty(self, emb: torch.Tensor, keys: torch.Tensor, k: int, per_prompt: bool) -> torch.Tensor:
        stored, stored_keys = self.emb[: self.count], self.keys[: self.count]
        allowed = keys.to(stored_keys.device)[:, None] == stored_keys[None, :] if per_prompt else None
        return knn_distance(emb.to(stored.device), stored, k, allowed)

    def state_dict(self) -> dict:
        return {"emb": self.emb[: self.count].cpu().clone(), "keys": self.keys[: self.count].cpu().clone(),
                "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        n = state["emb"].shape[0]
        if n > self.emb.shape[0] or state["emb"].shape[1] != self.emb.shape[1]:
            raise ValueError(f"archive state holds {tuple(state['emb'].shape)} entries, which does not fit an "
                             f"archive of size {self.emb.shape[0]} and dim {self.emb.shape[1]}")
        self.emb.zero_()
        self.keys.zero_()
        self.emb[:n], self.keys[:n] = state["emb"].to(self.emb.device), state["keys"].to(self.keys.device)
        self.count, self.pos = n, int(state["pos"]) % self.emb.shape[0]
