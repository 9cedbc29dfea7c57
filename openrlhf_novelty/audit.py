"""``openrlhf-novelty audit``: does any cheap answer earn more than an honest one? Measured on your own rollouts.

The rollouts are replayed batch by batch as training would see them (score, then update: RND learns, the archive
fills). Before a batch is learned from, every attack in ``attacks.ATTACKS`` is scored in it: one answer of each
group is replaced by the attacked text, everything else (the state, the siblings, the other prompts of the batch)
stays as it is, so the difference in reward is what the trick pays. A worse answer is compared with the honest
answer it replaces; a near-duplicate of a sibling with an exact copy of that sibling.

Honest answers are the rows marked ``"sound": true`` (hand-checked), or every row when no row has the field. A
paraphrase or translation is a new text to the judge, so it is compared with the copy at the quality the judge
gave it: what the reward pays for the rewording itself (the judge's own reading of rewordings is its business,
and shows in ``moved``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from openrlhf_novelty.attacks import ATTACKS, LM_REWRITES, Attack, Context, topic_words
from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.reward import NoveltyReward

logger = logging.getLogger(__name__)

GAIN_TOL = 1e-3  # a gain under this is float noise: a variant the reward cannot tell from its source differs ~1e-7
HONEST_COST = 0.1  # the checks "cost" an honest answer when they take more than this off its reward
HONEST_SHARE = 0.05  # --fail-on-gain: at most this share of honest answers may pay that cost
BOOTSTRAP = 2000


# Each check and the settings that turn it off: what an honest answer would earn if it could not misfire.
CHECKS = {"relevance": {"quality_relevance_weight": 0.0}, "language": {"quality_language_weight": 0.0},
          "fluency": {"quality_fluency_weight": 0.0},
          "nondegenerate": {"quality_degenerate_weight": 0.0},
          "shared": {"quality_shared_threshold": 2.0, "quality_template_threshold": 2.0}}


def checks_off(cfg: NoveltyConfig, only: str | None = None) -> NoveltyConfig:
    """The config with every check (or only ``only``) off."""
    return cfg.replace(**{k: v for name, off in CHECKS.items() if only in (None, name) for k, v in off.items()})


class DiskCache:
    """Judgments and rewrites by a judge / language model, remembered across runs (each attacked text is judged
    once). Entries carry a fingerprint of the judge's settings: another judge or rubric never reads them."""

    def __init__(self, path: str | None, fingerprint: str):
        self.path, self.fingerprint = path, fingerprint
        self.data: dict[str, object] = {}
        self.dirty = False
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    row = json.loads(line)
                    if row.get("fp") == fingerprint:
                        self.data[row["key"]] = row["value"]

    @staticmethod
    def key(*parts: str) -> str:
        return hashlib.blake2b("\x00".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

    def save(self) -> None:
        """Atomically: a run killed midway keeps the previous file."""
        if not self.path or not self.dirty:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            for k, v in self.data.items():
                fh.write(json.dumps({"fp": self.fingerprint, "key": k, "value": v}, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)
        self.dirty = False


def judge_fingerprint(cfg: NoveltyConfig, judge) -> str:
    parts = [cfg.judge_base_url, cfg.judge_model, cfg.judge_local_path, cfg.judge_local_scoring,
             str(cfg.judge_blind_numbers), str(cfg.judge_temperature), str(cfg.judge_samples), judge.template]
    return DiskCache.key(*parts)


class CachedJudge:
    """The configured judge with a disk cache in front of ``judge_many`` (everything else passes through)."""

    def __init__(self, judge, cache: DiskCache):
        self.judge, self.cache = judge, cache

    def judge_many(self, prompts: list[str], texts: list[str]) -> tuple[list[float | None], list[bool]]:
        keys = [self.cache.key("soundness", p, t) for p, t in zip(prompts, texts)]
        todo = [i for i, k in enumerate(keys) if k not in self.cache.data]
        failed = [False] * len(texts)
        got: dict[int, float | None] = {}
        if todo:
            scores, bad = self.judge.judge_many([prompts[i] for i in todo], [texts[i] for i in todo])
            for i, s, f in zip(todo, scores, bad):
                got[i], failed[i] = s, f
                if not f:  # a failure is not remembered: the next run asks again
                    self.cache.data[keys[i]] = s
                    self.cache.dirty = True
        return [got[i] if i in got else self.cache.data[k] for i, k in enumerate(keys)], failed

    def __getattr__(self, name):
        return getattr(self.judge, name)


def lm_rewriter(cfg: NoveltyConfig, judge, cache: DiskCache) -> Callable[[str, str], str | None] | None:
    """(kind, text) -> the configured judge model's paraphrase / translation of ``text`` (cached), or None when
    no judge model is configured."""
    if judge is None:
        return None

    def rewrite(kind: str, text: str) -> str | None:
        key = cache.key("rewrite", kind, text)
        if key not in cache.data:
            ask = LM_REWRITES[kind].format(text=text)
            try:
                if judge.local is not None:
                    reply = judge.local.sample([ask], 1, 200, 0.0)[0][0]
                else:
                    reply = judge.transport.ask(ask, 300)
            except Exception as e:  # the attack is skipped for this answer, the audit goes on
                logger.warning("audit: the judge model could not write a %s (%s)", kind, type(e).__name__)
                return None
            cache.data[key], cache.dirty = reply.strip(), True
        return cache.data[key] or None

    return rewrite


@dataclass
class Outcome:
    """What one attack did, per audited group (a prompt's group in one batch)."""

    gains: list[float] = field(default_factory=list)  # over the attack's baseline, mean over the group's slots
    gains_vs_honest: list[float] = field(default_factory=list)
    moved: dict[str, float] = field(default_factory=dict)  # component -> summed change over the baseline
    count: int = 0  # attacked answers
    example: str = ""


def honest_slots(batch: list[dict], group_size: int, marked: bool) -> list[list[int]]:
    """Per group of the batch, the positions of its honest answers."""
    out = []
    for start in range(0, len(batch), group_size):
        group = batch[start:start + group_size]
        out.append([i for i, r in enumerate(group) if (r.get("sound") is True or not marked) and r["response"].strip()])
    return out


class Auditor:
    """Replays rollouts through one NoveltyReward and scores every attack in every batch before it is learned."""

    def __init__(self, model: NoveltyReward, group_size: int, rewrite=None, max_slots: int = 4,
                 attacks: tuple[Attack, ...] = ATTACKS):
        self.model, self.group_size, self.rewrite, self.max_slots = model, group_size, rewrite, max_slots
        self.attacks = attacks
        # What honest answers would earn with every check off, and with each one off alone (what each costs).
        self.free = {name: NoveltyReward(checks_off(model.config, None if name == "all" else name),
                                         embedder=model.embedder, judge=model.judge) for name in ("all", *CHECKS)}
        for m in (model, *self.free.values()):
            m.watch_checks = False  # attacks fail checks by design: no warnings
        self.outcomes = {a.name: Outcome() for a in attacks}
        self.skipped: dict[str, str] = {}
        self.honest_costs: dict[str, list[float]] = {name: [] for name in self.free}
        self.prompts_seen: list[str] = []

    def run(self, rows: list[dict], batch_groups: int, progress=None) -> None:
        marked = any("sound" in r for r in rows)
        per_batch = self.group_size * batch_groups
        for start in range(0, len(rows), per_batch):
            batch = rows[start:start + per_batch]
            slots = honest_slots(batch, self.group_size, marked)
            if any(slots):
                self.audit_batch(batch, slots, progress)
            scored = self.model.score([r["prompt"] for r in batch], [r["response"] for r in batch], self.group_size)
            self.model.update(scored)  # as training: the next batch meets a state that has learned this one

    def audit_batch(self, batch: list[dict], slots: list[list[int]], progress=None) -> None:
        n = self.group_size
        prompts = [r["prompt"] for r in batch]
        base = [r["response"] for r in batch]
        honest = self.model.score(prompts, base, n)
        state = self.model.state_dict()
        for name, free_model in self.free.items():
            free_model.load_state_dict(state)
            free = free_model.score(prompts, base, n)
            self.honest_costs[name] += [free.rewards[g * n + i] - honest.rewards[g * n + i]
                                        for g, idx in enumerate(slots) for i in idx]
        group_prompts = prompts[::n]
        vocabulary = sorted({w for t in base for w in t.split() if w.isalpha() and len(w) > 2})
        attacked = [g for g, idx in enumerate(slots) if idx]
        per_group: dict[str, dict[int, list[tuple[float, float]]]] = {a.name: {} for a in self.attacks}
        for rnd in range(min(self.max_slots, max(len(s) for s in slots))):
            picks = {g: (slots[g][rnd % len(slots[g])], slots[g][(rnd + 1) % len(slots[g])]) for g in attacked}
            copy_texts = _replace(base, {g * n + i: base[g * n + j] for g, (i, j) in picks.items() if i != j})
            copy = self.model.score(prompts, copy_texts, n)
            for attack in self.attacks:
                texts = {}
                for g, (i, j) in picks.items():
                    if attack.family == "copy" and i == j:
                        continue  # a group with one honest answer has no sibling to copy
                    src = j if attack.family == "copy" else i
                    ctx = Context(
                        prompt=group_prompts[g], honest=base[g * n + src],
                        siblings=[base[g * n + k] for k in slots[g] if k != src],
                        other_answer=_other_answer(base, slots, picks, g, n),
                        topic=topic_words(group_prompts[g], group_prompts), vocabulary=vocabulary,
                        variants=batch[g * n + src].get("variants") or {}, rewrite=self.rewrite)
                    text = attack.make(ctx)
                    if text is not None:
                        texts[g * n + i] = text
                if progress is not None:
                    progress.update(1)
                if not texts:
                    continue
                scored = self.model.score(prompts, _replace(base, texts), n)
                ref = copy if attack.family == "copy" else honest
                if attack.needs_lm:  # a rewording is a new text to the judge: compare at the quality it got
                    same_q = list(copy.components["quality"])
                    for pos in texts:
                        same_q[pos] = scored.components["quality"][pos]
                    ref = self.model.score(prompts, copy_texts, n, quality=same_q)
                out = self.outcomes[attack.name]
                out.example = out.example or next(iter(texts.values()))
                for pos in texts:
                    gain = scored.rewards[pos] - ref.rewards[pos]
                    per_group[attack.name].setdefault(pos // n, []).append(
                        (gain, scored.rewards[pos] - honest.rewards[pos]))
                    out.count += 1
                    for k, v in scored.components.items():
                        if k in ref.components:
                            out.moved[k] = out.moved.get(k, 0.0) + v[pos] - ref.components[k][pos]
        for name, groups in per_group.items():
            for pairs in groups.values():
                self.outcomes[name].gains.append(sum(p[0] for p in pairs) / len(pairs))
                self.outcomes[name].gains_vs_honest.append(sum(p[1] for p in pairs) / len(pairs))

    def report(self, seed: int = 0) -> dict:
        rows = []
        for attack in self.attacks:
            out = self.outcomes[attack.name]
            row = {"attack": attack.name, "family": attack.family, "kind": attack.kind, "doc": attack.doc}
            if not out.gains:
                row["skipped"] = self.skipped.get(attack.name) or (
                    f"needs a language model to write a {attack.needs_lm}: configure judge.base_url or "
                    f"judge.local_path, or give rows 'variants': {{'{attack.needs_lm}': ...}}" if attack.needs_lm
                    else "no group it applies to")
                rows.append(row)
                continue
            lo, hi = bootstrap_mean(out.gains, seed)
            moved = sorted(((k, v / out.count) for k, v in out.moved.items() if k != "reward"),
                           key=lambda kv: -abs(kv[1]))
            row["moved_all"] = {k: v for k, v in moved if abs(v) > GAIN_TOL}
            row.update(prompts=len(out.gains), answers=out.count, mean_gain=sum(out.gains) / len(out.gains),
                       ci=[lo, hi], pays_share=sum(g > GAIN_TOL for g in out.gains) / len(out.gains),
                       mean_gain_vs_honest=sum(out.gains_vs_honest) / len(out.gains_vs_honest),
                       moved={k: v for k, v in moved[:4] if abs(v) > GAIN_TOL}, example=out.example[:300])
            rows.append(row)
        def cost(values: list[float]) -> dict:
            return {"mean_cost": sum(values) / len(values) if values else 0.0,
                    "costly_share": sum(c > HONEST_COST for c in values) / len(values) if values else 0.0}

        costs = self.honest_costs
        return {"attacks": rows, "baseline": {"worse": "the honest answer it replaces",
                                              "copy": "an exact copy of the sibling it rewrites"},
                "honest": {"answers": len(costs["all"]), **cost(costs["all"]), "threshold": HONEST_COST,
                           "by_check": {name: cost(costs[name]) for name in CHECKS}}}


def _replace(texts: list[str], at: dict[int, str]) -> list[str]:
    out = list(texts)
    for i, t in at.items():
        out[i] = t
    return out


def _other_answer(base: list[str], slots: list[list[int]], picks: dict, g: int, n: int) -> str:
    """An honest answer of another group of the batch that this round leaves in place (so the batch still holds
    it, as a policy copying across prompts would find it)."""
    for step in range(1, len(slots)):
        h = (g + step) % len(slots)
        keep = [k for k in slots[h] if h not in picks or k != picks[h][0]]
        if keep:
            return base[h * n + keep[0]]
    return ""


def bootstrap_mean(values: list[float], seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over prompts."""
    rng = random.Random(seed)
    k = len(values)
    means = sorted(sum(values[rng.randrange(k)] for _ in range(k)) / k for _ in range(BOOTSTRAP))
    tail = (1 - level) / 2
    return means[int(tail * BOOTSTRAP)], means[min(BOOTSTRAP - 1, int(math.ceil((1 - tail) * BOOTSTRAP)) - 1)]


def failures(report: dict, max_share: float, allowed: tuple[str, ...] = ()) -> list[str]:
    """What --fail-on-gain fails on: an attack whose mean gain is above 0 beyond its interval, or that pays on more
    than ``max_share`` of prompts (``allowed`` ones are reported, not failed: known, open holes)."""
    bad = []
    for row in report["attacks"]:
        if "skipped" in row or row["attack"] in allowed:
            continue
        if row["ci"][0] > 0:
            bad.append(f"{row['attack']}: mean gain {row['mean_gain']:+.4f}, interval [{row['ci'][0]:+.4f}, "
                       f"{row['ci'][1]:+.4f}] above 0")
        elif row["pays_share"] > max_share:
            bad.append(f"{row['attack']}: pays on {row['pays_share']:.0%} of prompts (at most {max_share:.0%})")
    return bad


def pressure_pools(rows: list[dict], group_size: int, rewrite=None, attacks: tuple[Attack, ...] = ATTACKS,
                   view=None) -> dict:
    """Per prompt with honest answers, the candidates the GRPO simulation's policy chooses from."""
    from openrlhf_novelty.pressure import candidates

    marked = any("sound" in r for r in rows)
    honest: dict[str, list[dict]] = {}
    for start in range(0, len(rows), group_size):
        group = rows[start:start + group_size]
        picked = [r for r in group if (r.get("sound") is True or not marked) and r["response"].strip()]
        if picked:
            honest[group[0]["prompt"]] = picked  # the last group of a prompt wins
    prompts = list(honest)
    vocabulary = sorted({w for r in rows for w in r["response"].split() if w.isalpha() and len(w) > 2})
    return {p: candidates(p, honest[p], prompts, honest[prompts[(k + 1) % len(prompts)]][0]["response"],
                          vocabulary, attacks, rewrite, view) for k, p in enumerate(prompts)}


def run_pressure(model: NoveltyReward, pools: dict, steps: int, group_size: int, lr: float, seed: int,
                 progress=None) -> dict:
    """The simulation for the configured reward and for a quality-only arm, from the same state."""
    from openrlhf_novelty.bounded import LRU
    from openrlhf_novelty.pressure import simulate

    state = model.state_dict()
    # Every candidate and its prompt-free form stay encoded, for both arms: the policy draws from all of them every
    # step, and a cache smaller than that re-encodes most of each step's batch (25 s a step instead of under 1).
    encoded = LRU(2 * sum(len(pool) for pool in pools.values()) + 1024)
    arms = {}
    for name, cfg in (("configured", model.config), ("quality only", model.config.replace(reward_novelty_coef=0.0))):
        arm = NoveltyReward(cfg, embedder=model.embedder, judge=model.judge)
        arm.watch_checks = False
        arm._emb_cache = encoded
        arm.load_state_dict(state)
        arms[name] = simulate(arm, pools, steps, group_size, lr, seed, progress)
    return arms


def pressure_failures(arms: dict, allowed: tuple[str, ...] = ()) -> list[str]:
    """The simulation's targets: every kind of worse answer ends with at most a quarter of its starting mass, no
    near-duplicate holds more mass than the clean answer it copies (beyond two standard errors: a copy the reward
    cannot tell from its source drifts by chance), and the honest answers keep at least twice the effective ideas of
    the quality-only arm. ``allowed`` attacks are not held to the second."""
    run, base = arms["configured"], arms["quality only"]
    copy_kinds = {"honest", "surface", "paraphrase", "translation"}
    bad = [f"{k}: {run['end']['kinds'][k]:.4f} of mass at the end, {v:.4f} at the start (> 1/4)"
           for k, v in run["start"]["kinds"].items() if k not in copy_kinds and run["end"]["kinds"][k] > v / 4]
    bad += [f"{a}: {c['mass']:.4f} of mass against {c['clean_mass']:.4f} for the clean answer it copies"
            for a, c in run["end"]["copies"].items()
            if a not in allowed and c["mass"] - c["clean_mass"] > 2 * c["diff_se"]]
    if run["end"]["effective_ideas"] < 2 * base["end"]["effective_ideas"]:
        bad.append(f"effective honest ideas {run['end']['effective_ideas']:.2f}, under twice the quality-only "
                   f"arm's {base['end']['effective_ideas']:.2f}")
    return bad


def write_report(report: dict, out_dir: str) -> list[str]:
    """report.json, report.md and report.png (mean gain per attack with its interval)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f) for f in ("report.json", "report.md", "report.png")]
    with open(paths[0], "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1, ensure_ascii=False)
    with open(paths[1], "w", encoding="utf-8") as fh:
        fh.write(report_markdown(report))
    _plot(report, paths[2])
    return paths


def report_markdown(report: dict) -> str:
    lines = ["# Reward audit", "", f"Rollouts: {report.get('input', '')}; {report.get('config', '')}.", "",
             "Gain: the attacked answer's reward minus its baseline's, in its own group and batch, same state "
             "(worse answers: the honest answer they replace; copies: an exact copy of the sibling they rewrite). "
             f"Interval: 95% bootstrap over prompts. Pays: the share of prompts where the gain is above {GAIN_TOL:g}.",
             "", "| attack | family | prompts | mean gain | 95% interval | pays on | vs honest | moved by |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["attacks"]:
        if "skipped" in r:
            lines.append(f"| {r['attack']} | {r['family']} | skipped: {r['skipped']} | | | | | |")
            continue
        moved = ", ".join(f"{k} {v:+.3f}" for k, v in r["moved"].items()) or "nothing"
        lines.append(f"| {r['attack']} | {r['family']} | {r['prompts']} | {r['mean_gain']:+.4f} | "
                     f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}] | {r['pays_share']:.0%} | "
                     f"{r['mean_gain_vs_honest']:+.4f} | {moved} |")
    h = report["honest"]
    by = "; ".join(f"{k} alone {v['mean_cost']:+.4f} ({v['costly_share']:.1%})" for k, v in h["by_check"].items())
    lines += ["", f"**Honest answers**: on {h['answers']} honest answers the checks cost {h['mean_cost']:+.4f} of "
              f"reward on average; {h['costly_share']:.1%} lose more than {h['threshold']:g} ({by}).", ""]
    if "pressure" in report:
        lines += pressure_markdown(report["pressure"])
    if report.get("failures"):
        lines += ["", "**Failures**:", *[f"- {f}" for f in report["failures"]]]
    lines += ["", "Examples (the first attacked text of each attack):", ""]
    lines += [f"- `{r['attack']}`: {json.dumps(r['example'], ensure_ascii=False)}" for r in report["attacks"]
              if r.get("example")]
    return "\n".join(lines) + "\n"


# The components that are defences, and the direction in which each one works against an answer.
DEFENCES = {"relevance": -1, "language": -1, "fluency": -1, "nondegenerate": -1, "shared": +1}


def defence_table(report: dict) -> str:
    """The gaming table of docs/gaming.md, from a report: each attack, what it gains, and the checks that moved
    against it (the README's hand-written table was replaced by this, so its figures are measured)."""
    rows = ["| attack | what the policy writes | mean gain [95% interval] | pays on | stopped by |",
            "| --- | --- | --- | --- | --- |"]
    for r in report["attacks"]:
        if "skipped" in r:
            rows.append(f"| `{r['attack']}` | {r['doc']} | skipped | | {r['skipped']} |")
            continue
        moved = r.get("moved_all", r["moved"])
        stops = [f"{k} {v:+.2f}" for k, v in moved.items() if k in DEFENCES and v * DEFENCES[k] > GAIN_TOL]
        if r["kind"] == "surface" and abs(r["mean_gain"]) <= GAIN_TOL:
            stops = ["extract.normalize (the same text once normalized)"]
        elif r["family"] == "copy" and not stops:
            stops = ["diversity.duplicate_threshold (one idea)" if r["mean_gain"] <= 0 else "nothing yet"]
        known = " (known, open)" if r["attack"] in report.get("allowed", []) else ""
        rows.append(f"| `{r['attack']}`{known} | {r['doc']} | {r['mean_gain']:+.3f} [{r['ci'][0]:+.3f}, "
                    f"{r['ci'][1]:+.3f}] | {r['pays_share']:.0%} | {', '.join(stops) or 'novelty it lost'} |")
    h = report["honest"]
    rows += ["", f"What the checks cost the {h['answers']} hand-checked honest answers: {h['costly_share']:.1%} lose "
             f"more than {h['threshold']:g} of their reward (mean {h['mean_cost']:+.3f}); each check alone: "
             + "; ".join(f"{k} {v['costly_share']:.1%} (mean {v['mean_cost']:+.3f})" for k, v in h["by_check"].items())
             + "."]
    return "\n".join(rows)


def pressure_markdown(arms: dict) -> list[str]:
    run, base = arms["configured"], arms["quality only"]
    lines = [f"**GRPO pressure** ({run['steps']} steps, lr {run['lr']:g}; mass averaged over prompts):", "",
             "| kind | start | configured: end | quality only: end |", "| --- | --- | --- | --- |"]
    for k, v in sorted(run["start"]["kinds"].items(), key=lambda kv: kv[0] != "honest"):
        lines.append(f"| {k} | {v:.4f} | {run['end']['kinds'][k]:.4f} | {base['end']['kinds'][k]:.4f} |")
    lines += ["", "| copy attack | configured: its mass | its clean source's | quality only: its mass | its clean "
              "source's |", "| --- | --- | --- | --- | --- |"]
    for a, c in run["end"]["copies"].items():
        q = base["end"]["copies"][a]
        lines.append(f"| {a} | {c['mass']:.4f} | {c['clean_mass']:.4f} | {q['mass']:.4f} | {q['clean_mass']:.4f} |")

    def counts(key: str) -> str:
        return f"{run['start'][key]:.2f} at the start, {run['end'][key]:.2f} configured, " \
               f"{base['end'][key]:.2f} quality only"

    lines += ["", f"Effective honest ideas per prompt (the spread over ideas times the share of mass on honest answers "
              f"and their copies): {counts('effective_ideas')}. Spread among the honest mass alone: "
              f"{counts('ideas_among_honest')}. The honest answers as written, without their copies: "
              f"{counts('ideas_without_copies')}. Distinct ideas expected in a group of {run['group_size']}: "
              f"{counts('ideas_per_group')}. Mass of each prompt's likeliest candidate: {run['end']['top']:.2f} "
              f"configured, {base['end']['top']:.2f} quality only.", ""]
    return lines


def _plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["attacks"] if "skipped" not in r]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.2))
    for y, r in enumerate(rows):
        color = "tab:red" if r["family"] == "worse" else "tab:blue"
        ax.errorbar(r["mean_gain"], y, xerr=[[r["mean_gain"] - r["ci"][0]], [r["ci"][1] - r["mean_gain"]]],
                    fmt="o", color=color)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)), [r["attack"] for r in rows], fontsize=8)
    ax.set_xlabel("mean reward gain over the baseline (red: vs the honest answer, blue: vs an exact copy)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


GAMING_BEGIN = "<!-- generated from benchmarks/results/audit/report.json by `make docs`; tests/test_docs.py checks it -->"
GAMING_END = "<!-- end of the generated table -->"


def update_gaming_doc(path: str, report_path: str = "benchmarks/results/audit/report.json") -> None:
    """Replace the table between GAMING_BEGIN and GAMING_END in ``path`` with ``defence_table`` of the report."""
    with open(report_path, encoding="utf-8") as fh:
        table = defence_table(json.load(fh))
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    head, _, rest = text.partition(GAMING_BEGIN + "\n")
    _, _, tail = rest.partition(GAMING_END)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(head + GAMING_BEGIN + "\n" + table + "\n" + GAMING_END + tail)
