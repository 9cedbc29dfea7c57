"""Hookless novelty, per sample, against shared state: what the reward file / server add when ``stream.update_every``
is set (runs without the experience-maker hook).

With ``stream.group_timeout`` > 0 (the default) a sample's request waits until its prompt's whole group has arrived
(``stream.group_size`` samples with the same prompt and label), and the group is scored together by the same
``NoveltyReward.score`` call the hook makes: the same numbers as the hook for each group. A group that does not fill
in time is scored with the siblings present and counted. With 0, each sample is scored when it arrives, against the
prompt's recent eligible siblings (the first one gets diversity 0). Either way RND and the archive learn from every K
samples, however the requests were batched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import torch

from openrlhf_novelty.batcher import Batcher
from openrlhf_novelty.bounded import LRU, worth_logging
from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.diversity import group_diversity
from openrlhf_novelty.reward import NoveltyReward, ScoredBatch, novelty_checks, novelty_terms, reward_formula

logger = logging.getLogger(__name__)

# OpenRLHF's HTTP client gives a reward request 180 s, then sends the same sample again (a duplicate sibling): no
# request waits for its group past this many seconds after it arrived, and the judge's partition (diversity.mode
# judge) gets what is left of that, less SCORING_MARGIN for the scoring itself.
REQUEST_BUDGET = 170.0
SCORING_MARGIN = 5.0


class _Group:
    """One prompt's samples waiting to be scored together; ``done`` is set once ``result`` (or ``error``) is in."""

    def __init__(self, key: tuple[str, str], first: float):
        self.key, self.first = key, first
        self.budget_end = float("inf")  # when the member that arrived first runs out of request time
        self.items: list[tuple[str, str, float | None]] = []  # (prompt, response, quality)
        self.classes: list | None = None  # diversity.mode judge: the judge's classes, asked before scoring
        self.closed = False  # no more members; scored (or being scored) by the thread that closed it
        self.late = False  # stragglers of a group that timed out: scored at once
        self.done = threading.Event()
        self.result: tuple[list[float], dict[str, list[float]]] | None = None
        self.error: BaseException | None = None


class StreamingNovelty:
    """One per process (per vLLM engine for the reward file, one for all engines in the server)."""

    def __init__(self, config: NoveltyConfig, model: NoveltyReward):
        self.config, self.model = config, model
        self._siblings = LRU(config.stream_max_prompts)  # group_timeout 0: prompt key -> its recent siblings
        # Samples scored but not yet learned from: (embedding, prompt key, relevant, prompt-free shingles, text).
        self._pending: list[tuple[torch.Tensor, int, bool, list[int], str, str]] = []
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], _Group] = {}  # group_timeout > 0: groups still filling
        # Groups scored without some members: key -> [when they started, members still missing]. A member arriving
        # late is scored at once (its siblings were scored already; waiting a whole timeout again would be for
        # nothing), but only as many as were missing: the prompt's next group waits for its siblings as usual.
        self._timed_out = LRU(4096)
        self._open_lock = threading.Lock()
        self.groups_complete = self.groups_timed_out = 0
        # OpenRLHF sends one sample per request from hundreds of rollouts at once: encode them together.
        self._batcher = Batcher(self._score_batch)
        self._group_batcher = Batcher(self._score_groups)

    def __call__(self, prompts: list[str], responses: list[str], quality: list[float | None],
                 labels: list | None = None, arrived: float | None = None):
        """(rewards, components) for these samples. ``arrived``: when the request came in (time.monotonic)."""
        if self.config.stream_group_timeout > 0:
            labels = [""] * len(prompts) if labels is None else labels
            return self._grouped(prompts, responses, quality, labels, time.monotonic() if arrived is None else arrived)
        return self._batcher.submit((prompts, responses, quality))

    # -- group completion (stream.group_timeout > 0)
    def _grouped(self, prompts, responses, quality, labels, arrived: float):
        n, timeout = self.config.stream_group_size, self.config.stream_group_timeout
        slots: list[tuple[_Group, int]] = []
        full: list[_Group] = []
        with self._open_lock:
            now = time.monotonic()
            for p, r, q, label in zip(prompts, responses, quality, labels):
                # The label separates two dataset rows with one prompt; with the same label too, the first n to
                # arrive form one group and the next n another (never one of 2n).
                key = (p, label if isinstance(label, str) else repr(label))
                g = self._open.get(key)
                if g is None:
                    late = self._straggler(key, now, timeout)
                    g = self._open[key] = _Group(key, now if late is None else late)
                    g.late = late is not None
                g.budget_end = min(g.budget_end, arrived + REQUEST_BUDGET)
                slots.append((g, len(g.items)))
                g.items.append((p, r, q))
                if len(g.items) >= n:
                    self._close(g)
                    full.append(g)
        for g in full:  # this request completed them: it scores them
            self._run(g)
        for g in dict.fromkeys(g for g, _ in slots):
            end = min(g.first + self.config.stream_group_timeout, arrived + REQUEST_BUDGET)
            if g.done.wait(max(0.0, end - time.monotonic())):
                continue
            with self._open_lock:  # out of time: the first member to notice scores the group as it stands
                mine = not g.closed
                if mine:
                    self._close(g)
                    if len(g.items) < n and not g.late:  # a straggler's own group is not waited for again
                        self._timed_out.put(g.key, [g.first, n - len(g.items)])
            if mine:
                self._run(g)
            g.done.wait()  # another thread is scoring it (bounded: scoring never waits on anything)
        rewards, comps = [], {}
        for g, i in slots:
            if g.error is not None:
                raise RuntimeError(f"scoring this sample's group failed: {type(g.error).__name__}: {g.error}")
            r, c = g.result
            rewards.append(r[i])
            for k, v in c.items():
                comps.setdefault(k, []).append(v[i])
        return rewards, comps

    def _straggler(self, key: tuple[str, str], now: float, timeout: float) -> float | None:
        """For a sample that starts a new group: the start of the timed-out group it belongs to (so it is scored at
        once), or None when it starts a group of its own. Called under _open_lock."""
        late = self._timed_out.get(key)
        if late is None:
            return None
        if now - late[0] >= 2 * timeout or late[1] <= 0:
            del self._timed_out[key]
            return None
        late[1] -= 1
        if late[1] == 0:
            del self._timed_out[key]
        return late[0]

    def _close(self, g: _Group) -> None:
        g.closed = True
        if self._open.get(g.key) is g:
            del self._open[g.key]

    def _run(self, g: _Group) -> None:
        try:
            cfg = self.config
            if cfg.diversity_mode == "judge" and cfg.diversity_weight > 0:  # here, in parallel, outside every lock
                g.classes = self.model.judge_classes([it[0] for it in g.items], [it[1] for it in g.items],
                                                     len(g.items), g.budget_end - time.monotonic() - SCORING_MARGIN)
            g.result = self._group_batcher.submit(g)
        except Exception as e:  # every member falls back on its own (RemoteReward logs and counts it)
            g.error = e
        finally:
            g.done.set()

    def _score_groups(self, groups: list[_Group]) -> list[tuple]:
        """Score closed groups, those of one size in one call (one encoder pass); one result per group."""
        n = self.config.stream_group_size
        out: list[tuple | None] = [None] * len(groups)
        by_size: dict[int, list[int]] = {}
        for i, g in enumerate(groups):
            by_size.setdefault(len(g.items), []).append(i)
        for size, members in by_size.items():
            items = [it for i in members for it in groups[i].items]
            classes = [c for i in members for c in groups[i].classes] if groups[members[0]].classes else None
            rewards, comps = self._score([it[0] for it in items], [it[1] for it in items], [it[2] for it in items],
                                         group_size=size, classes=classes)
            comps["group_complete"] = [float(size >= n)] * len(items)
            for j, i in enumerate(members):
                part = slice(j * size, (j + 1) * size)
                out[i] = (rewards[part], {k: v[part] for k, v in comps.items()})
        with self._lock:
            for g in groups:
                if len(g.items) >= n:
                    self.groups_complete += 1
                    continue
                self.groups_timed_out += 1
                timed_out, total = self.groups_timed_out, self.groups_timed_out + self.groups_complete
                if worth_logging(timed_out, first=5):
                    logger.warning(
                        "novelty: a group of %d samples (stream.group_size %d) was scored with the siblings present "
                        "after waiting %.0f s for the rest (%d of %d groups so far). If groups of %d keep arriving, "
                        "--rollout.n_samples_per_prompt (or --eval.n_samples_per_prompt: evaluation rollouts go "
                        "through this reward too) is not stream.group_size; else a sibling took longer than "
                        "stream.group_timeout to generate and be judged", len(g.items), n,
                        time.monotonic() - g.first, timed_out, total, len(g.items))
        return out

    # -- scoring
    def _score_batch(self, requests: list[tuple]) -> list[tuple]:
        prompts = [p for r in requests for p in r[0]]
        rewards, comps = self._score(prompts, [x for r in requests for x in r[1]],
                                     [q for r in requests for q in r[2]])
        out, start = [], 0
        for r in requests:
            end = start + len(r[0])
            out.append((rewards[start:end], {k: v[start:end] for k, v in comps.items()}))
            start = end
        return out

    def _score(self, prompts: list[str], responses: list[str], quality: list[float | None], group_size: int = 0,
               classes: list | None = None):
        """Score samples: whole groups of ``group_size`` consecutive ones (the hook's numbers), or (0) each one
        against the recent siblings of its prompt. ``classes``: the judge's, per group (diversity.mode judge)."""
        cfg = self.config
        with self._lock:
            recent = (torch.stack([p[0] for p in self._pending]),
                      torch.tensor([p[1] for p in self._pending], dtype=torch.int64)) if self._pending else None
            scored = self.model.score(prompts, responses, group_size or 1, quality=quality, recent=recent,
                                      classes=classes)
            c = scored.components
            emb, keys = scored.embeddings.cpu(), scored.prompt_keys.tolist()
            if group_size:  # the group was scored whole, exactly as the hook scores it
                terms = {k: torch.tensor(c[k], dtype=torch.float64) for k in novelty_terms(cfg)}
                out = {k: torch.tensor(c[k], dtype=torch.float64) for k in ("reward", "novelty", "gate")}
                if "partition_failed" in c:  # diversity.mode judge
                    out["partition_failed"] = torch.tensor(c["partition_failed"], dtype=torch.float64)
            else:
                terms, out = self._against_siblings(scored, quality)
            relevant = scored.relevant.tolist() if scored.relevant is not None else [False] * len(keys)
            for i, key in enumerate(keys):
                if scored.valid[i]:  # RND and the archive learn every text, eligible or not
                    self._pending.append((emb[i], key, relevant[i], scored.shingles[i], scored.texts[i],
                                          scored.answers[i]))
            while len(self._pending) >= cfg.stream_update_every:  # every K samples, however they were batched
                self._update(cfg.stream_update_every)
        comps = {k: v.tolist() for k, v in terms.items()}
        comps.update({k: out[k].tolist() for k in ("novelty", "gate", "partition_failed") if k in out})
        comps.update({k: c[k] for k in novelty_checks(cfg) + ["unembedded"]})  # as the hook logs them
        return out["reward"].tolist(), comps

    def _against_siblings(self, scored: ScoredBatch, quality: list[float | None]):
        """group_timeout 0: diversity of each sample against the eligible siblings of its prompt seen so far."""
        cfg, c = self.config, scored.components
        mask = torch.tensor([v is None for v in quality])
        mask = mask if mask.any() else None
        q = torch.tensor(c["quality"], dtype=torch.float64)
        eligible = scored.valid.cpu() & (torch.tensor(c["gate"]) > 0)  # the samples that can earn novelty
        emb = scored.embeddings.cpu()
        div = []
        for i, key in enumerate(scored.prompt_keys.tolist()):
            sibs = self._siblings.get(key)
            if not eligible[i]:  # earns no novelty, and is no sibling the others should differ from
                div.append(0.0)
                continue
            group = torch.stack([emb[i], *sibs]) if sibs else emb[i][None]
            # Siblings at or above diversity.duplicate_threshold are the same idea, as in a whole group: a reworded
            # copy of a sibling that arrived earlier adds nothing.
            div.append(float(group_diversity(group[None], cfg.diversity_mode, cfg.diversity_threshold,
                                             lam=cfg.diversity_elliptical_lambda,
                                             duplicate=cfg.diversity_duplicate_threshold)[0, 0]))
            if sibs is None:
                sibs = self._siblings[key] = deque(maxlen=cfg.stream_group_size - 1)
            sibs.append(emb[i])
            self._siblings.move_to_end(key)
        self._siblings.trim()
        terms = {k: torch.tensor(c[k], dtype=torch.float64) for k in ("rnd", "archive", "bank", "outcome") if k in c}
        if cfg.diversity_weight > 0:
            terms["diversity"] = torch.tensor(div, dtype=torch.float64)
        conditions = {k: torch.tensor(c[k], dtype=torch.float64) for k in novelty_checks(cfg)}
        return terms, reward_formula(cfg, scored.step, q, terms, mask, conditions)

    def _update(self, k: int) -> None:
        """Learn from the first k pending samples."""
        learn, self._pending = self._pending[:k], self._pending[k:]
        self.model.update(ScoredBatch(rewards=[], components={}, step=self.model.step,
                                      embeddings=torch.stack([p[0] for p in learn]),
                                      prompt_keys=torch.tensor([p[1] for p in learn], dtype=torch.int64),
                                      valid=torch.ones(len(learn), dtype=torch.bool),
                                      relevant=torch.tensor([p[2] for p in learn], dtype=torch.bool),
                                      shingles=[p[3] for p in learn], texts=[p[4] for p in learn],
                                      answers=[p[5] for p in learn]))

    def state_dict(self, with_model: bool = False) -> dict:
        """The samples not yet learned from and the recent siblings, and (``with_model``) the model's state taken
        under the same lock, so no update moves samples from pending into the model between the two. Groups still
        filling are requests in flight, not state: a restart ends them."""
        with self._lock:
            dim = self.model.rnd.dim
            return {**({"model": self.model.state_dict()} if with_model else {}),
                "pending": torch.stack([p[0] for p in self._pending]) if self._pending else torch.zeros(0, dim),
                "pending_keys": torch.tensor([p[1] for p in self._pending], dtype=torch.int64),
                "pending_relevant": torch.tensor([p[2] for p in self._pending], dtype=torch.bool),
                "pending_shingles": [torch.tensor(p[3], dtype=torch.int64) for p in self._pending],
                "pending_texts": [p[4] for p in self._pending],
                "pending_answers": [p[5] for p in self._pending],
                "sibling_keys": torch.tensor(list(self._siblings), dtype=torch.int64),
                "siblings": [torch.stack(list(d)) for d in self._siblings.values()],
            }

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            n = len(state["pending_keys"])
            texts = state.get("pending_texts", [""] * n)
            self._pending = list(zip(state["pending"], state["pending_keys"].tolist(),
                                     state.get("pending_relevant", torch.zeros(n, dtype=torch.bool)).tolist(),
                                     [t.tolist() for t in state.get("pending_shingles", [torch.zeros(0)] * n)],
                                     texts, state.get("pending_answers", texts)))  # older states: answers = texts
            self._siblings = LRU(self.config.stream_max_prompts)
            self._siblings.update((k, deque(list(e), maxlen=self.config.stream_group_size - 1))
                                  for k, e in zip(state["sibling_keys"].tolist(), state["siblings"]))
