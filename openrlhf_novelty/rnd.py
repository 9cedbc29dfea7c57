"""Random Network Distillation on sentence embeddings: global, per-sample novelty (Burda et al. 2018; CleanRL).

The whole algorithm is here: a frozen seeded target, a one-layer-deeper predictor, observation whitening with
running statistics clipped to [-c, c], novelty = squared prediction error divided by its running std (no mean
subtraction), and the predictor trained *after* a batch is scored, on a random fraction of it. ``score`` never
changes state; ``update`` does, once per rollout batch.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class RunningMeanStd:
    """Per-dimension running mean / variance merged batch by batch (Chan et al.), as CleanRL / baselines keep it."""

    def __init__(self, shape: tuple[int, ...] = (), device: str = "cpu"):
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.var = torch.ones(shape, dtype=torch.float64, device=device)
        self.count = 0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64)
        n = x.shape[0]
        if n == 0:
            return
        batch_mean, batch_var = x.mean(0), x.var(0, unbiased=False)
        if self.count == 0:
            self.mean, self.var, self.count = batch_mean, batch_var, n
            return
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total

    def state_dict(self) -> dict:
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        device = self.mean.device
        self.mean, self.var, self.count = state["mean"].to(device), state["var"].to(device), int(state["count"])


def _mlp(sizes: list[int], generator: torch.Generator) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        # Orthogonal init from our own generator: the target is a pure function of rnd.seed on any machine.
        with torch.no_grad():
            w = torch.empty(b, a)
            nn.init.orthogonal_(w, gain=2**0.5, generator=generator)
            lin.weight.copy_(w)
            lin.bias.zero_()
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU())
    return nn.Sequential(*layers)


class RND:
    def __init__(self, dim: int, hidden: int = 256, out: int = 128, lr: float = 1e-3, update_proportion: float = 0.25,
                 updates_per_batch: int = 4, warmup_samples: int = 64, obs_clip: float = 5.0, clip: float = 5.0,
                 seed: int = 0, device: str = "cpu"):
        self.dim, self.device = dim, device
        self.update_proportion, self.updates_per_batch = update_proportion, updates_per_batch
        self.warmup_samples, self.obs_clip, self.clip = warmup_samples, obs_clip, clip
        gen = torch.Generator().manual_seed(seed)
        self.target = _mlp([dim, hidden, out], gen).to(device).requires_grad_(False)
        self.predictor = _mlp([dim, hidden, hidden, out], gen).to(device)
        self.optimizer = torch.optim.Adam(self.predictor.parameters(), lr=lr)
        self.obs_rms = RunningMeanStd((dim,), device)
        self.err_rms = RunningMeanStd((), device)
        self.mask_generator = torch.Generator().manual_seed(seed + 1)
        self.updates = 0

    def _whiten(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.obs_rms.mean.float(), self.obs_rms.var.float().add(1e-8).sqrt()
        return ((x.to(self.device) - mean) / std).clamp(-self.obs_clip, self.obs_clip)

    def _errors(self, x: torch.Tensor) -> torch.Tensor:
        z = self._whiten(x)
        return (self.predictor(z) - self.target(z)).pow(2).mean(-1)

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(novelty, raw error) per row of ``x``; novelty = raw / running std, soft-clipped to [0, clip).

        The clip is ``clip * tanh(v / clip)``: about v for small v, never above ``clip``, and still increasing, so
        two samples above the clip do not tie (a tie carries no signal through GRPO's group normalization).
        Computed in float64 so the order survives far into saturation. Zero for every sample until the
        observation statistics have seen ``warmup_samples``: whitening with the statistics of a handful of
        samples would make the first bonuses noise.
        """
        raw = self._errors(x).double()
        if self.obs_rms.count < max(self.warmup_samples, 1):
            return torch.zeros_like(raw), raw
        novelty = raw / (self.err_rms.var.sqrt() + 1e-8)
        return self.clip * torch.tanh(novelty / self.clip), raw

    def update(self, x: torch.Tensor) -> float:
        """One training step's worth of learning from a scored batch; returns the mean predictor loss."""
        x = x.to(self.device)
        self.obs_rms.update(x)
        with torch.no_grad():
            self.err_rms.update(self._errors(x))
        with torch.enable_grad():  # hosts call us under no_grad (OpenRLHF's make_experience_batch is decorated)
            loss_sum = self._train(x)
        self.updates += 1
        return loss_sum / max(self.updates_per_batch, 1)

    def _train(self, x: torch.Tensor) -> float:
        loss_sum = 0.0
        for _ in range(self.updates_per_batch):
            # CleanRL's update_proportion: each step sees a random fraction, so the predictor keeps up with the
            # policy without memorising every sample at once.
            keep = torch.rand(x.shape[0], generator=self.mask_generator) < self.update_proportion
            if not keep.any():
                keep[torch.randint(x.shape[0], (1,), generator=self.mask_generator)] = True
            loss = self._errors(x[keep.to(self.device)]).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.item()
        return loss_sum

    def state_dict(self) -> dict:
        return {
            "target": {k: v.cpu().clone() for k, v in self.target.state_dict().items()},
            "predictor": {k: v.cpu().clone() for k, v in self.predictor.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "obs_rms": self.obs_rms.state_dict(),
            "err_rms": self.err_rms.state_dict(),
            "mask_generator": self.mask_generator.get_state(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.target.load_state_dict(state["target"])
        self.predictor.load_state_dict(state["predictor"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.err_rms.load_state_dict(state["err_rms"])
        self.mask_generator.set_state(state["mask_generator"])
        self.updates = int(state["updates"])
