"""The verifiable A/B's tasks and metrics (benchmarks/verifiable_tasks.py, benchmarks/ab_verifiable.py): the verifier
a user would trust, and the run's pipeline end to end in its --smoke size."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

pytest.importorskip("pycountry")
from verifiable_tasks import Task, build  # noqa: E402


def test_verifier_folds_surface_and_aliases_to_one_canonical_name():
    country = Task("country", first="u")
    assert country.canonical("**USA**") == "United States"
    assert country.canonical("The United States of America.\nIt is big.") == "United States"
    assert country.canonical("United Kingdom") == "United Kingdom"
    assert Task("element").canonical("aluminum") == "Aluminium"
    assert Task("language").canonical("C programming language") == "C"
    assert Task("colour").canonical("Light Grey") == Task("colour").canonical("lightgray")


def test_verifier_refuses_lists_sentences_wrong_letter_and_other_categories():
    country = Task("country", first="k")
    assert country.canonical("Kenya") == "Kenya"
    assert country.canonical("Kenya, Kuwait") is None  # a list is not an answer
    assert country.canonical("The name of a country is Kenya.") is None
    assert country.canonical("France") is None  # wrong first letter
    assert Task("country").canonical("Gold") is None  # an element, not a country
    assert Task("element", last="n").canonical("Oxygen") == "Oxygen"
    assert Task("element", last="n").canonical("Gold") is None
    assert Task("planet").canonical("") is None


def test_task_split_sizes_and_held_out_never_seen_in_training():
    train, heldout = build()
    assert len(train) >= 150 and len(heldout) >= 40
    assert not {t.prompt for t in train} & {t.prompt for t in heldout}
    assert {t.category for t in heldout if not t.last} == {"us_state", "currency", "planet"}
    assert not any(t.last for t in train)
    assert len({t.key for t in train + heldout}) == len(train) + len(heldout)
    assert train[0].messages()[-1] == {"role": "user", "content": train[0].prompt}


def test_utility_is_novelty_bench_patience_normalised():
    from ab_verifiable import utility

    assert utility(["a", "b"]) == pytest.approx(1.0)
    assert utility(["a", "a"]) == pytest.approx(1 / 1.8)  # 1 of (1 + 0.8)
    assert utility([None, "a"]) == pytest.approx(0.8 / 1.8)
    assert utility([None, None]) == 0.0


def test_smoke_runs_every_arm_and_writes_the_report(tmp_path):
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    # Its own interpreter, as a user runs it: other tests put a stand-in vllm module in sys.modules, whose version
    # ("N/A") breaks the import of trl's GRPOTrainer.
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ab_verifiable.py"), "--out", str(tmp_path),
                          "--smoke"], capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    runs = results["0"]["runs"]
    assert set(runs) == {"before", "A: verifier only", "B: verifier + novelty", "C: verifier + outcome"}
    for metrics in runs.values():
        assert 0.0 <= metrics["validity"] <= 1.0 and 0.0 <= metrics["distinct_valid"] <= 4
    steps = [json.loads(line) for line in (tmp_path / "seed_0" / "arm_B" / "train_steps.jsonl").open()]
    assert {s["step"] for s in steps} == {1, 2}
    summary = (tmp_path / "summary.md").read_text()
    assert "Targets:" in summary and (tmp_path / "training.png").exists()
