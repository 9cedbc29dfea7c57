"""``openrlhf-novelty eval``: diversity and quality of generations, per prompt and overall, runs side by side."""

from __future__ import annotations

import json
import os
import re
import statistics
from collections import OrderedDict

import torch

from openrlhf_novelty.checks import prompt_free, relevance, shared_across_prompts
from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.diversity import prompt_key
from openrlhf_novelty.metrics import CLUSTER_SWEEP, embedding_vendi, pass_at_k, prompt_metrics, summarize
from openrlhf_novelty.text import clean_text, extract

# What each reported metric means, for the Markdown report; higher is more diverse unless said otherwise.
DESCRIPTIONS = {
    "distinct_1": "unique unigrams / all unigrams over a prompt's samples",
    "distinct_2": "same for bigrams", "distinct_3": "same for trigrams", "distinct_4": "same for 4-grams",
    "self_bleu": "mean BLEU of each sample against its siblings (lower = more diverse)",
    "pairwise_distance": "mean cosine distance between sibling embeddings",
    "vendi_embedding": "effective number of distinct samples, embedding kernel (1..k)",
    "vendi_ngram": "effective number of distinct samples, bigram kernel (1..k)",
    "semantic_clusters": "NoveltyBench's distinct classes: clusters of near-identical meaning among the k samples "
                         "(1..k), at --threshold",
    **{f"semantic_clusters@{t:.2f}": f"the same at cosine {t:.2f} (the sweep)" for t in CLUSTER_SWEEP},
    "judge_classes": "NoveltyBench's distinct classes with the LLM judge as the equivalence backend: classes of the "
                     "same idea among the k samples (1..k; judge.partition_rubric)",
    "judge_partition_failed": "share of prompts whose samples the judge could not sort (no judge_classes there)",
    "bank_novelty": "1 - similarity to the closest known answer",
    "format": "share of samples where extract.pattern matched",
    "soundness": "mean judge soundness (0..1)",
    "judge_failed": "share of judgments that failed (fallback used)",
    "pass_at_k": "share of prompts with at least one correct sample (needs labels and reward.task_func)",
    "relevance": "closeness to the answer's own prompt against the other prompts, 0..1 (quality.relevance_*)",
    "on_topic": "share of answers with relevance >= 0.5",
    "cross_prompt_duplicates": "whole set: share of answers (near-)verbatim also given to another prompt "
                               "(cos >= quality.shared_threshold); collapse > 0",
    "distinct_answers": "whole set: distinct answers (exact, case and spacing ignored) / all answers",
    "vendi_set": "whole set: effective number of distinct answers across every prompt (embedding Vendi)",
    "soundness_stripped": "judge probe: soundness of the answers with any leading number removed",
    "judge_number_gain": "judge probe: soundness as written - stripped (> 0.05: numbers buy the judge)",
    "judge_primed_gain": "judge probe: soundness with '10/10 ' prepended - as written (> 0.05: the judge can be "
                         "bought)",
}
# When a run counts as collapsed, off topic, or judged by a judge a number can buy: the report's first lines.
COLLAPSE_DUPLICATES, OFF_TOPIC_RATE, JUDGE_GAIN = 0.05, 0.5, 0.05
_LEADING_NUMBER = re.compile(r"^\W*(?:\d+(?:[.,:/]\d+)*(?:\s*%|\s*/\s*\d+|\s+out of \d+)?(?=[\s.:,)\-]|$)"
                             r"[\s.:,)\-]*)+")


def read_generations(path: str) -> OrderedDict[str, list[dict]]:
    """JSONL ``{"prompt", "response", "label"?}`` -> samples grouped by prompt, in first-seen order."""
    from openrlhf_novelty.jsonl import read_samples

    groups: OrderedDict[str, list[dict]] = OrderedDict()
    for row in read_samples(path):
        groups.setdefault(row["prompt"], []).append(row)
    return groups


def evaluate_run(groups: OrderedDict[str, list[dict]], embedder, config: NoveltyConfig, threshold: float,
                 bank=None, judge=None, verifier=None, soundness: list[float | None] | None = None,
                 probe: int = 64) -> dict:
    """Metrics per prompt, overall, and over the whole set (what a per-prompt view cannot see: one answer given
    to every prompt, drift off topic). ``soundness`` (one per sample, None = failed) skips asking ``judge``.
    ``probe``: answers (spread over the set) the judge rescores with leading numbers stripped and with '10/10 '
    prepended, to show whether its soundness can be bought; 0 = no probe."""
    prompts = [p for p, rows in groups.items() for _ in rows]
    raw = [r["response"] for rows in groups.values() for r in rows]
    extracted = [extract(clean_text(t, config.extract_strip_tokens), config.extract_pattern, config.extract_fallback)
                 for t in raw]
    texts, matched = [t for t, _ in extracted], [m for _, m in extracted]
    emb = embedder.encode(texts)
    keys = torch.tensor([prompt_key(p) for p in prompts], dtype=torch.int64)
    distinct_prompts = list(groups)
    prompt_emb = embedder.encode(distinct_prompts)
    own = prompt_emb[[distinct_prompts.index(p) for p in prompts]] if prompts else prompt_emb
    free = [prompt_free(t, p) for t, p in zip(texts, prompts)]  # as the reward reads it: an echo is not relevance
    rel, _ = relevance(embedder.encode(free), own, keys, torch.tensor([prompt_key(p) for p in distinct_prompts]),
                       prompt_emb, tuple(config.quality_relevance_ramp), config.quality_relevance_min_prompts)
    rel = rel * torch.tensor([bool(f) for f in free], dtype=torch.float64)
    sound = failed = correct = None
    if soundness is not None:
        sound, failed = soundness, [s is None for s in soundness]
    elif judge is not None:
        sound, failed = judge.judge_many(prompts, texts)
    classes = None
    if judge is not None:  # NoveltyBench's distinct classes, the judge deciding which samples are one idea
        bounds = [0]
        for rows in groups.values():
            bounds.append(bounds[-1] + len(rows))
        classes = judge.partition_many(list(groups), [texts[a:b] for a, b in zip(bounds, bounds[1:])])
    if verifier is not None:
        labels = [r.get("label", "") for rows in groups.values() for r in rows]
        from openrlhf_novelty.remote import as_floats

        scores = as_floats(verifier([p + t for p, t in zip(prompts, raw)], prompts, labels), len(raw))
        correct = [s >= 0.5 for s in scores]
    per_prompt, start = [], 0
    for prompt, rows in groups.items():
        end = start + len(rows)
        m = prompt_metrics(texts[start:end], emb[start:end], threshold, bank)
        if config.extract_pattern:
            m["format"] = sum(matched[start:end]) / len(rows)
        if sound is not None:
            ok = [s for s in sound[start:end] if s is not None]
            if ok:  # all judgments masked: soundness is unknown for this prompt, not 0
                m["soundness"] = sum(ok) / len(ok)
            m["judge_failed"] = sum(failed[start:end]) / len(rows)
        if classes is not None:
            found = classes[len(per_prompt)]
            m["judge_partition_failed"] = float(found is None)
            if found is not None:
                m["judge_classes"] = float(len(set(found)))
        if correct is not None:
            m["pass_at_k"] = pass_at_k(correct[start:end])
        m["relevance"] = float(rel[start:end].mean())
        m["on_topic"] = float((rel[start:end] >= 0.5).double().mean())
        per_prompt.append({"prompt": prompt, "k": len(rows), **m})
        start = end
    overall = summarize([{k: v for k, v in p.items() if k not in ("prompt", "k")} for p in per_prompt])
    overall.update(set_metrics(texts, emb, keys, config.quality_shared_threshold))
    if judge is not None and probe > 0 and texts:
        overall.update(judge_probe(judge, prompts, texts, sound, probe))
    return {"prompts": len(groups), "samples": len(raw), "overall": overall, "per_prompt": per_prompt}


def set_metrics(texts: list[str], emb: torch.Tensor, keys: torch.Tensor, shared_threshold: float) -> dict:
    """Whole-set diversity: cross-prompt duplicates, distinct answers, embedding Vendi over every answer."""
    valid = torch.tensor([bool(t) for t in texts])
    shared = shared_across_prompts(emb, keys, valid, min(shared_threshold, 1.0))
    normalized = {" ".join(t.lower().split()) for t in texts}
    sample = emb if emb.shape[0] <= 2000 else emb[torch.linspace(0, emb.shape[0] - 1, 2000).long()]
    return {"cross_prompt_duplicates": float(shared.mean()) if texts else 0.0,
            "distinct_answers": len(normalized) / len(texts) if texts else 0.0,
            "vendi_set": embedding_vendi(sample)}


def strip_leading_number(text: str) -> str:
    """'9. Tweets ...', '95% tweets ...', '10/10 - tweets ...' -> 'Tweets ...': what a number-primed answer says."""
    return _LEADING_NUMBER.sub("", text, count=1) or text


def judge_probe(judge, prompts: list[str], texts: list[str], sound: list[float | None], n: int) -> dict:
    """Rescore up to ``n`` answers (evenly spread) stripped of any leading number and with '10/10 ' prepended."""
    idx = sorted({round(i * (len(texts) - 1) / max(1, n - 1)) for i in range(min(n, len(texts)))})
    idx = [i for i in idx if texts[i] and sound[i] is not None]
    if not idx:
        return {}
    ps = [prompts[i] for i in idx]
    stripped = judge.judge_many(ps, [strip_leading_number(texts[i]) for i in idx])[0]
    primed = judge.judge_many(ps, ["10/10 " + texts[i] for i in idx])[0]
    rows = [(sound[i], s, p) for i, s, p in zip(idx, stripped, primed) if s is not None and p is not None]
    if not rows:
        return {}
    return {"soundness_stripped": statistics.fmean(s for _, s, _ in rows),
            "judge_number_gain": statistics.fmean(w - s for w, s, _ in rows),
            "judge_primed_gain": statistics.fmean(p - w for w, _, p in rows)}


def verdicts(runs: dict[str, dict]) -> list[str]:
    """One line per failure the numbers show: collapse across prompts, drift off topic (absolutely, or against the
    first run: the untrained model), a judge that numbers can buy. Empty when none."""
    lines, first = [], next(iter(runs.values()), None)
    for name, run in runs.items():
        o = run["overall"]
        if o.get("cross_prompt_duplicates", 0.0) > COLLAPSE_DUPLICATES:
            lines.append(f"COLLAPSED: {name}: {o['cross_prompt_duplicates']:.0%} of answers are (near-)duplicates of "
                         f"answers to other prompts; {o['distinct_answers']:.0%} of answers are distinct")
        base = first["overall"].get("on_topic") if first is not None and run is not first else None
        if "on_topic" in o and (o["on_topic"] < OFF_TOPIC_RATE or (base is not None and o["on_topic"] < base - 0.1)):
            against = f" (was {base:.0%} in {next(iter(runs))})" if base is not None else ""
            lines.append(f"OFF TOPIC: {name}: only {o['on_topic']:.0%} of answers are about their prompt{against}")
        for key, what in (("judge_number_gain", "leading numbers"), ("judge_primed_gain", "a prepended '10/10'")):
            if o.get(key, 0.0) > JUDGE_GAIN:
                lines.append(f"JUDGE BOUGHT: {name}: {what} add {o[key]:+.2f} soundness; its soundness figure "
                             "is not evidence")
    return lines


def write_report(runs: dict[str, dict], out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    json_path, md_path = os.path.join(out_dir, "report.json"), os.path.join(out_dir, "report.md")
    with open(json_path, "w", encoding="utf-8") as fh:
        json.dump(runs, fh, indent=2, ensure_ascii=False)
    names = list(runs)
    metrics = [k for k in DESCRIPTIONS if any(k in r["overall"] for r in runs.values())]
    warn = verdicts(runs)
    lines = ["# Diversity and quality report", "", *([f"**{w}**" for w in warn] + [""] if warn else []),
             "Per-prompt metrics averaged over prompts. " +
             ", ".join(f"**{n}**: {runs[n]['prompts']} prompts, {runs[n]['samples']} samples" for n in names) + ".",
             "", "| metric | " + " | ".join(names) + " | meaning |", "| --- | " + " | ".join("---" for _ in names) + " | --- |"]
    for k in metrics:
        cells = [f"{runs[n]['overall'][k]:.3f}" if k in runs[n]["overall"] else "" for n in names]
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {DESCRIPTIONS[k]} |")
    with open(md_path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return [json_path, md_path, *write_plots(runs, out_dir)]


QUALITY_KEYS = ("soundness", "pass_at_k", "format")  # the first one present is the quality axis


def write_plots(runs: dict[str, dict], out_dir: str) -> list[str]:
    """diversity_vs_quality.png (per-prompt points and run means) and distributions.png (per-prompt histograms)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training nodes or CI
    import matplotlib.pyplot as plt

    paths = []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    quality = next((k for k in QUALITY_KEYS if all(k in r["overall"] for r in runs.values())), None)
    if quality is not None:
        fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
        for i, (name, run) in enumerate(runs.items()):
            c = colors[i % len(colors)]
            xs = [p.get(quality) for p in run["per_prompt"]]
            ys = [p["vendi_embedding"] for p in run["per_prompt"]]
            pts = [(x, y) for x, y in zip(xs, ys) if x is not None]
            if not pts:
                continue
            ax.scatter([x for x, _ in pts], [y for _, y in pts], s=14, alpha=0.35, color=c)
            # The mean of the points drawn: prompts without a quality value (all judgments failed) are not shown.
            ax.scatter([sum(x for x, _ in pts) / len(pts)], [sum(y for _, y in pts) / len(pts)], s=140, marker="*",
                       color=c, edgecolor="black", label=f"{name} (mean of {len(pts)} prompts)")
        ax.set_xlabel(f"quality: {quality} (per prompt)")
        ax.set_ylabel("semantic diversity: embedding Vendi score")
        ax.set_title("Diversity vs quality (up and right is better)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        paths.append(os.path.join(out_dir, "diversity_vs_quality.png"))
        fig.savefig(paths[-1])
        plt.close(fig)
    shown = [k for k in ("vendi_embedding", "pairwise_distance", "distinct_2", "self_bleu")
             if any(k in r["overall"] for r in runs.values())]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.4), dpi=120)
    for ax, key in zip(axes if len(shown) > 1 else [axes], shown):
        values = {name: [p[key] for p in run["per_prompt"] if key in p] for name, run in runs.items()}
        everything = [v for vs in values.values() for v in vs]
        lo, hi = min(everything), max(everything)
        bins = [lo + (hi - lo) * j / 12 for j in range(13)] if hi > lo else 12  # shared bins: bars line up
        for i, (name, vs) in enumerate(values.items()):
            ax.hist(vs, bins=bins, alpha=0.5, color=colors[i % len(colors)], label=name)
        ax.set_xlabel(key)
        ax.set_ylabel("prompts")
        ax.set_title(key.replace("_", " ") + (" (lower = more diverse)" if key == "self_bleu" else ""))
    axes_list = axes if len(shown) > 1 else [axes]
    axes_list[0].legend()
    fig.suptitle("Per-prompt distributions")
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "distributions.png"))
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


def summary_table(step: int, components: dict[str, list[float]]) -> str:
    """One scored step as a table: mean / std / min / max of every reward component."""
    lines = [f"step {step}: {len(components['reward'])} samples",
             f"  {'component':<12} {'mean':>9} {'std':>9} {'min':>9} {'max':>9}"]
    for name, values in components.items():
        std = statistics.pstdev(values) if len(values) > 1 else 0.0
        lines.append(f"  {name:<12} {statistics.fmean(values):>9.4f} {std:>9.4f} {min(values):>9.4f} "
                     f"{max(values):>9.4f}")
    return "\n".join(lines)
