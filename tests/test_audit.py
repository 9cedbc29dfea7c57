"""`openrlhf-novelty audit`: the red team in the product. Bad input gets one line; the report says what each attack
gains; --fail-on-gain fails when a trick pays (shown by switching a defence off); the shipped corpus passes."""

import json
import pathlib

import pytest

from openrlhf_novelty import cli
from openrlhf_novelty.attacks import ATTACKS

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT / "benchmarks" / "audit_corpus.jsonl"


def small_corpus(tmp_path, prompts: int = 4, variants: bool = True) -> pathlib.Path:
    """History and audited groups of the first ``prompts`` prompts of the shipped corpus (groups of 8)."""
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    history, audited = rows[:448], rows[448:]
    keep = {r["prompt"] for r in audited[: 8 * prompts]}
    picked = [r for r in history if r["prompt"] in keep] + audited[: 8 * prompts]
    if not variants:
        for r in picked:
            r.pop("variants", None)
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked))
    return path


@pytest.mark.parametrize("content, message", [
    ("", "no rollouts (the file is empty)"),
    ('{"prompt": "p", "response": "a"}\n' * 3, "the last group has 3 lines; expected --group-size 8"),
    ('{"prompt": "p"}\n', "line 1: field 'response' is missing"),
    ('{"prompt": "p", "response": "a", "sound": "yes"}\n' * 8, "line 1: field 'sound' must be true or false"),
    ('{"prompt": "p", "response": "a", "variants": ["x"]}\n' * 8, "line 1: field 'variants' must map names to"),
    ('{"prompt": "p", "response": "a", "sound": false}\n' * 8, "no honest answer to attack"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, content, message):
    f = tmp_path / "in.jsonl"
    f.write_text(content)
    assert cli.main(["audit", str(f), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("openrlhf-novelty audit: error: ") and err.count("\n") == 1


def test_the_report_says_what_every_attack_gains_and_what_the_checks_cost(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["audit", str(small_corpus(tmp_path, variants=False)), "--output-dir", str(out),
                     "--slots", "1", "--simulate", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["attack"] for r in report["attacks"]] == [a.name for a in ATTACKS] and len(ATTACKS) >= 14
    skipped = {r["attack"]: r["skipped"] for r in report["attacks"] if "skipped" in r}
    assert set(skipped) == {"copy_paraphrase", "copy_translation"}  # no variants, no judge model to write them
    assert "configure judge.base_url or judge.local_path" in skipped["copy_paraphrase"]
    scored = [r for r in report["attacks"] if "skipped" not in r]
    assert all(r["prompts"] == 4 and r["ci"][0] <= r["mean_gain"] <= r["ci"][1] for r in scored)
    surface = [r for r in scored if r["kind"] == "surface"]
    assert surface and all(r["mean_gain"] == pytest.approx(0.0, abs=1e-6) for r in surface)  # normalized away
    assert report["honest"]["answers"] == 16 and set(report["honest"]["by_check"]) >= {"relevance", "shared"}
    assert set(report["pressure"]) == {"configured", "quality only"}
    assert (out / "report.md").read_text().startswith("# Reward audit") and (out / "report.png").stat().st_size
    assert "| template | worse | 4 |" in capsys.readouterr().out


def test_fail_on_gain_fails_when_a_defence_is_off(tmp_path, capsys):
    # Without the template and shared-answer checks, one template for every prompt pays novelty it never earned.
    corpus = small_corpus(tmp_path, variants=False)
    args = ["audit", str(corpus), "--output-dir", str(tmp_path / "out"), "--slots", "1", "--fail-on-gain"]
    assert cli.main([*args, "--set", "quality.template_threshold=1.5", "--set", "quality.shared_threshold=1.5"]) == 1
    assert "template: " in capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    template = next(r for r in report["attacks"] if r["attack"] == "template")
    assert template["mean_gain"] > 0 and template["pays_share"] > 0.5


@pytest.mark.skipif(not (ROOT / "benchmarks" / "audit" / "judge_cache.jsonl").exists(),
                    reason="the stand-in judge's cache is not built")
def test_the_shipped_corpus_passes_with_the_default_config_and_the_stand_in_judge(tmp_path, capsys):
    """What CI holds the reward to: no attack gains beyond its interval or on more than 10% of prompts, and the
    checks cost at most 5% of the 112 hand-checked answers more than 0.1 of their reward. The judge (SmolLM2 read
    by probability) answers from its cache, so this runs in minutes."""
    code = cli.main(["audit", str(CORPUS), "--config", str(ROOT / "benchmarks" / "audit" / "stand_in_judge.yaml"),
                     "--judge-cache", str(ROOT / "benchmarks" / "audit" / "judge_cache.jsonl"),
                     "--output-dir", str(tmp_path / "out"), "--fail-on-gain", *[f"--allow={a}" for a in ALLOWED]])
    assert code == 0, capsys.readouterr().err


# Attacks the default config is known not to stop yet, each with its measured reason (docs/gaming.md).
ALLOWED = ["copy_paraphrase"]  # a rewording below diversity.duplicate_threshold looks like a new idea
