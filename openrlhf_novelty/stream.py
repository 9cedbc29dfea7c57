"""Hookless novelty, per sample, against shared state: what the reward file / server add when ``stream.update_every``
is set (runs without the experience-maker hook).

Each sample is scored when it arrives: RND as it stands, the archive, and diversity against the prompt's recent
eligible siblings (``group_diversity``, the one implementation the hook also uses). RND and the archive learn from
every K samples, however the requests were batched.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

import torch

from openrlhf_novelty.batcher import Batcher
from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.diversity import group_diversity
from openrlhf_novelty.reward import NoveltyReward, ScoredBatch, reward_formula


class StreamingNovelty:
    """One per process (per vLLM engine for the reward file, one for all engines in the server)."""

    def __init__(self, config: NoveltyConfig, model: NoveltyReward):
        self.config, self.model = config, model
        self._siblings: OrderedDict[int, deque] = OrderedDict()
        self._pending: list[tuple[torch.Tensor, int]] = []
        self._lock = threading.Lock()
        # OpenRLHF sends one sample per request from hundreds of rollouts at once: encode them together.
        self._batcher = Batcher(self._score_batch)

    def __call__(self, prompts: list[str], responses: list[str], quality: list[float | None]):
        """(rewards, components) for these samples, scored together with every other request waiting."""
        return self._batcher.submit((prompts, responses, quality))

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

    def _score(self, prompts: list[str], responses: list[str], quality: list[float | None]):
        cfg = self.config
        with self._lock:
            recent = (torch.stack([e for e, _ in self._pending]),
                      torch.tensor([k for _, k in self._pending], dtype=torch.int64)) if self._pending else None
            scored = self.model.score(prompts, responses, 1, quality=quality, recent=recent)
            c = scored.components
            mask = torch.tensor([v is None for v in quality])
            mask = mask if mask.any() else None
            q = torch.tensor(c["quality"], dtype=torch.float64)
            eligible = scored.valid.cpu() & (torch.tensor(c["gate"]) > 0)  # the samples that can earn novelty
            emb, keys = scored.embeddings.cpu(), scored.prompt_keys.tolist()
            div = []
            for i, key in enumerate(keys):
                sibs = self._siblings.get(key)
                if not eligible[i]:  # earns no novelty, and is no sibling the others should differ from
                    div.append(0.0)
                    continue
                group = torch.stack([emb[i], *sibs]) if sibs else emb[i][None]
                div.append(float(group_diversity(group[None], cfg.diversity_mode, cfg.diversity_threshold,
                                                      lam=cfg.diversity_elliptical_lambda)[0, 0]))
                if sibs is None:
                    sibs = self._siblings[key] = deque(maxlen=cfg.stream_group_size - 1)
                sibs.append(emb[i])
                self._siblings.move_to_end(key)
            for i, key in enumerate(keys):
                if scored.valid[i]:  # RND and the archive learn every text, eligible or not
                    self._pending.append((emb[i], key))
            while len(self._siblings) > cfg.stream_max_prompts:
                self._siblings.popitem(last=False)
            terms = {k: torch.tensor(c[k], dtype=torch.float64) for k in ("rnd", "archive", "bank") if k in c}
            if cfg.diversity_weight > 0:
                terms["diversity"] = torch.tensor(div, dtype=torch.float64)
            shared = torch.tensor(c["shared"], dtype=torch.float64) if "shared" in c else None
            out = reward_formula(cfg, scored.step, q, terms, mask, shared)
            while len(self._pending) >= cfg.stream_update_every:  # every K samples, however they were batched
                self._update(cfg.stream_update_every)
        comps = {k: v.tolist() for k, v in terms.items()}
        comps.update(novelty=out["novelty"].tolist(), gate=out["gate"].tolist())
        if shared is not None:
            comps["shared"] = shared.tolist()
        return out["reward"].tolist(), comps

    def _update(self, k: int) -> None:
        """Learn from the first k pending samples."""
        learn, self._pending = self._pending[:k], self._pending[k:]
        emb = torch.stack([e for e, _ in learn])
        keys = torch.tensor([key for _, key in learn], dtype=torch.int64)
        self.model.update(ScoredBatch(rewards=[], components={}, step=self.model.step, embeddings=emb,
                                      prompt_keys=keys, valid=torch.ones(len(keys), dtype=torch.bool)))

    def state_dict(self) -> dict:
        """The samples not yet learned from and the recent siblings (the model's state is saved beside it)."""
        with self._lock:
            dim = self.model.rnd.dim
            return {
                "pending": torch.stack([e for e, _ in self._pending]) if self._pending else torch.zeros(0, dim),
                "pending_keys": torch.tensor([k for _, k in self._pending], dtype=torch.int64),
                "sibling_keys": torch.tensor(list(self._siblings), dtype=torch.int64),
                "siblings": [torch.stack(list(d)) for d in self._siblings.values()],
            }

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            self._pending = list(zip(state["pending"], state["pending_keys"].tolist()))
            self._siblings = OrderedDict(
                (k, deque(list(e), maxlen=self.config.stream_group_size - 1))
                for k, e in zip(state["sibling_keys"].tolist(), state["siblings"]))
