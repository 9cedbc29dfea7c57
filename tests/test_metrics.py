import math

import pytest
import torch

from openrlhf_novelty.metrics import (
    bank_novelty,
    distinct_n,
    embedding_vendi,
    mean_pairwise_distance,
    ngram_vendi,
    pass_at_k,
    prompt_metrics,
    self_bleu,
    semantic_clusters,
    summarize,
    vendi,
)


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


@pytest.mark.parametrize(
    "texts, n, expected",
    [
        (["a b c", "a b d"], 1, 4 / 6),  # unigrams a b c a b d: 4 distinct of 6
        (["a b c", "a b d"], 2, 3 / 4),  # bigrams ab bc ab bd: 3 distinct of 4
        (["x x", "x x"], 1, 1 / 4),  # one word four times
        (["The Cat!", "the cat"], 1, 2 / 4),  # lower-cased, punctuation dropped
        (["a", "b"], 3, None),  # no trigram at all: undefined, not 0
    ],
)
def test_distinct_n(texts, n, expected):
    assert distinct_n(texts, n) == (pytest.approx(expected) if expected is not None else None)


def test_self_bleu():
    assert self_bleu(["the cat sat on the mat"] * 3) == pytest.approx(1.0)  # identical samples
    assert self_bleu(["a b c d", "e f g h"]) == 0.0  # nothing shared
    assert self_bleu(["only one"]) == 0.0


def test_vendi_counts_effectively_distinct_samples():
    assert vendi(torch.eye(4)) == pytest.approx(4.0)  # four orthogonal samples
    assert vendi(torch.ones(3, 3)) == pytest.approx(1.0)  # three copies of one
    two_same_one_apart = torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]])
    # eigenvalues of K/3 are 2/3 and 1/3: exp(-(2/3 ln 2/3 + 1/3 ln 1/3)) = 1.8899
    assert vendi(two_same_one_apart) == pytest.approx(1.8899, abs=1e-4)
    assert embedding_vendi(torch.tensor([unit(0), unit(0), unit(90)])) == pytest.approx(1.8899, abs=1e-4)


def test_ngram_vendi():
    assert ngram_vendi(["a b c", "a b c"]) == pytest.approx(1.0)
    assert ngram_vendi(["a b", "c d", "e f"]) == pytest.approx(3.0)  # no shared bigram


def test_embedding_metrics():
    emb = torch.tensor([unit(0), unit(0), unit(90)])
    assert mean_pairwise_distance(emb) == pytest.approx(2 / 3)  # pairs: 0, 1, 1
    assert semantic_clusters(torch.tensor([unit(0), unit(25), unit(50), unit(-90)]), 0.85) == 2  # chain + loner
    assert bank_novelty(torch.tensor([unit(0), unit(90)]), torch.tensor([unit(0)])) == pytest.approx(0.5)


def test_pass_at_k_and_summary():
    assert pass_at_k([False, True, False]) == 1.0 and pass_at_k([False, False]) == 0.0
    assert summarize([{"a": 1.0, "b": 2.0}, {"a": 3.0}]) == {"a": 2.0, "b": 2.0}


def test_eval_reports_runs_side_by_side(tmp_path, capsys):
    import json

    from openrlhf_novelty import cli

    same = [{"prompt": p, "response": f"HYP: {t}"} for p, t in [("p1", "Numbers win.")] * 4 + [("p2", "Threads win.")] * 4]
    varied = [{"prompt": "p1", "response": t} for t in
              ["HYP: Tweets with numbers win.", "HYP: Questions spread.", "HYP: Morning posts travel.", "nothing"]]
    for name, rows in (("same", same), ("varied", varied)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report"
    code = cli.main(["eval", str(tmp_path / "same.jsonl"), str(tmp_path / "varied.jsonl"), "--output-dir", str(out),
                     "--set", r"extract.pattern=HYP:\s*(.+)"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    s, v = report["same"]["overall"], report["varied"]["overall"]
    assert (s["distinct_1"], s["semantic_clusters"], s["self_bleu"]) == (pytest.approx(0.25), 1.0, pytest.approx(1.0))
    assert (v["distinct_1"], v["semantic_clusters"], v["format"]) == (1.0, 4.0, 0.75)  # 4 answers, 3 with HYP:
    assert report["same"]["prompts"] == 2 and report["varied"]["samples"] == 4
    assert "| semantic_clusters | 1.000 | 4.000 |" in (out / "report.md").read_text()
    for png in ("diversity_vs_quality.png", "distributions.png"):  # format is the quality axis here
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p"}\n')
    assert cli.main(["eval", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl line 1: field 'response' is missing" in capsys.readouterr().err


# --- what a per-prompt view cannot see: collapse across prompts, drift off topic, a judge numbers can buy

def _groups(answers_per_prompt):
    from collections import OrderedDict

    from tests.test_checks import PROMPTS

    return OrderedDict((p, [{"prompt": p, "response": a} for a in answers])
                       for p, answers in zip(PROMPTS, answers_per_prompt))


class NumberBoughtJudge:
    """A judge stand-in a leading number buys, like SmolLM2 read by probability without blind_numbers."""

    def judge_many(self, prompts, texts):
        return [0.9 if t[:1].isdigit() else 0.4 for t in texts], [False] * len(texts)

    def partition_many(self, prompts, groups):
        return [None] * len(groups)  # it cannot sort answers into classes


def test_eval_reports_collapse_drift_and_a_bought_judge(embedder, tmp_path):
    from openrlhf_novelty.config import NoveltyConfig
    from openrlhf_novelty.evaluate import evaluate_run, verdicts, write_report
    from tests.test_checks import OFF_TOPIC, ON_TOPIC

    cfg = NoveltyConfig()
    healthy = evaluate_run(_groups(ON_TOPIC), embedder, cfg, 0.85)
    generic = "9. Meet new people every week and share your ideas with them."
    collapsed = evaluate_run(_groups([[generic, generic]] * 5), embedder, cfg, 0.85, judge=NumberBoughtJudge())
    drifted = evaluate_run(_groups([[OFF_TOPIC, a[0]] for a in ON_TOPIC]), embedder, cfg, 0.85)
    h, c, d = healthy["overall"], collapsed["overall"], drifted["overall"]
    assert h["cross_prompt_duplicates"] == 0.0 and h["distinct_answers"] == 1.0 and h["on_topic"] == 1.0
    assert c["cross_prompt_duplicates"] == 1.0 and c["distinct_answers"] == 0.1 and c["vendi_set"] < 1.01
    assert c["soundness"] == pytest.approx(0.9) and c["soundness_stripped"] == pytest.approx(0.4)
    assert c["judge_number_gain"] == pytest.approx(0.5) and c["judge_primed_gain"] == pytest.approx(0.0)
    # Half the answers are one off-topic line given to every prompt (it mentions water, so it passes for the
    # drink-more-water prompt, and against only 5 prompts the lenient default ramp lets one more through: 7 of 10).
    assert d["on_topic"] == 0.7 and d["cross_prompt_duplicates"] == 0.5
    runs = {"before": healthy, "collapsed": collapsed, "drifted": drifted}
    lines = verdicts(runs)
    assert [line.split(":")[0] + ":" + line.split(":")[1] for line in lines] == [
        "COLLAPSED: collapsed", "OFF TOPIC: collapsed", "JUDGE BOUGHT: collapsed", "COLLAPSED: drifted",
        "OFF TOPIC: drifted"]
    assert verdicts({"before": healthy}) == []
    report = open(write_report(runs, str(tmp_path))[1]).read().splitlines()
    assert report[2].startswith("**COLLAPSED: collapsed: 100% of answers")  # the first lines say it


def test_cluster_count_is_swept_over_thresholds():
    """Four answers 0, 30, 60, 90 degrees apart: cos 0.87 between neighbours, 0.5 two apart, 0 across."""
    emb = torch.tensor([unit(0), unit(30), unit(60), unit(90)])
    m = prompt_metrics(["a b c", "d e f", "g h i", "j k l"], emb, threshold=0.85)
    sweep = {k: v for k, v in m.items() if k.startswith("semantic_clusters@")}
    # Neighbours (cos 0.866) link at 0.6-0.8, chaining all four into one class; above 0.866 each is its own.
    assert sweep == {"semantic_clusters@0.60": 1.0, "semantic_clusters@0.70": 1.0, "semantic_clusters@0.80": 1.0,
                     "semantic_clusters@0.90": 4.0, "semantic_clusters@0.95": 4.0}
    assert m["semantic_clusters"] == 1.0  # the report's own threshold, 0.85 < 0.866


def test_eval_counts_distinct_classes_with_the_judge_as_the_equivalence_backend(embedder):
    """NoveltyBench's distinct@k, judge backend: the two cat answers are one idea to the judge, two to the embedding
    partition."""
    from collections import OrderedDict

    from openrlhf_novelty.config import NoveltyConfig
    from openrlhf_novelty.evaluate import DESCRIPTIONS, evaluate_run
    from openrlhf_novelty.judge import Judge
    from tests.fake_openai import FakeOpenAI
    from tests.test_judge import CATS

    with FakeOpenAI() as server:
        cfg = NoveltyConfig.from_dict({"judge": {"base_url": server.url, "model": "judge", "retries": 0}})
        prompt = "Which pet suits a flat?"
        groups = OrderedDict([(prompt, [{"prompt": prompt, "response": c} for c in CATS])])
        out = evaluate_run(groups, embedder, cfg, 0.85, judge=Judge(cfg), probe=0)["per_prompt"][0]
    assert out["judge_classes"] == 3.0 and out["semantic_clusters"] == 4.0
    assert out["judge_partition_failed"] == 0.0 and "judge_classes" in DESCRIPTIONS
