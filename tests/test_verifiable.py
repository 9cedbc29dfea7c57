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
    # --report-only trains nothing and leaves out what did not finish (the GPU check runs arms in parallel first).
    (tmp_path / "seed_0" / "eval_C.jsonl").unlink()
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ab_verifiable.py"), "--out", str(tmp_path),
                          "--smoke", "--report-only"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "seed 0 arm C: not finished, left out of the report" in run.stdout
    runs = json.loads((tmp_path / "results.json").read_text())["results"]["0"]["runs"]
    assert set(runs) == {"before", "A: verifier only", "B: verifier + novelty"}
    assert not (tmp_path / "seed_0" / "eval_C.jsonl").exists()


def test_time_limit_ends_training_only_after_its_seconds():
    from types import SimpleNamespace

    from ab_verifiable import time_limit

    state, never, soon = SimpleNamespace(global_step=3), time_limit(0), time_limit(1e-9)
    for cb in (never, soon):
        cb.on_train_begin(None, state, None)
    control = SimpleNamespace(should_training_stop=False)
    never.on_step_end(None, state, control)
    assert control.should_training_stop is False
    soon.on_step_end(None, state, control)
    assert control.should_training_stop is True


def test_evaluation_reads_each_prompt_once_and_answers_as_the_plain_model(tmp_path):
    """The evaluation copies each prompt's cache to its k samples, with prompts of different lengths left-padded
    in one batch: the model must read exactly what it reads alone (positions, mask), so that at a near-zero
    temperature every sample is the model's own greedy answer to its prompt."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from argparse import Namespace

    from ab_verifiable import generate_eval, load_policy

    model, tok = load_policy(str(tmp_path), 4, "cpu")
    train, _ = build()
    tasks = [train[0], next(t for t in train if t.first)]  # "Name a country." and a longer, lettered prompt
    generate_eval(model, tok, tasks, Namespace(eval_k=2, max_new_tokens=8, temperature=1e-5), 0,
                  str(tmp_path / "eval.jsonl"))
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").open()]
    assert [r["prompt"] for r in rows] == [tasks[0].prompt] * 2 + [tasks[1].prompt] * 2
    for t in tasks:
        ids = tok.apply_chat_template(t.messages(), add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        alone = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        assert [r["response"] for r in rows if r["prompt"] == t.prompt] == [alone, alone]


def test_verified_metrics_count_distinct_valid_names_and_training_habits():
    from ab_verifiable import verified_metrics

    state = Task("us_state")
    rows = [{"prompt": state.prompt, "response": r} for r in ("Texas", "texas.", "France", "Blorp")]
    m = verified_metrics(rows, {state.prompt: state})
    assert m["validity"] == 0.5 and m["distinct_valid"] == 1
    assert m["coverage"] == pytest.approx(1 / 50)
    assert m["training_category"] == 0.25  # "France": a country, trained on, wrong for a US state
    assert m["utility"] == pytest.approx(1 / (1 + 0.8 + 0.64 + 0.512))


def test_targets_compare_only_finished_equal_runs_and_say_why_not():
    from ab_verifiable import targets

    def run(validity, distinct, steps=24, failures=0):
        return {"validity": validity, "distinct_valid": distinct, "steps": steps, "reward_failures": failures}

    a, b = "A: verifier only", "B: verifier + novelty"
    results = {0: {"runs": {a: run(0.30, 1.0), b: run(0.27, 1.6)}},  # 1.6x at -0.03: met
               1: {"runs": {a: run(0.30, 1.0), b: run(0.20, 2.0)}},  # validity fell 0.10: missed
               2: {"runs": {a: run(0.30, 1.0), b: run(0.30, 2.0, steps=17)}},  # cut short by a time limit
               3: {"runs": {a: run(0.30, 1.0)}}}  # B never finished
    lines = targets(results, "AB")
    assert lines[0].startswith("- met: seed 0, B/A distinct valid = 1.60")
    assert lines[1].startswith("- MISSED: seed 1, B/A distinct valid = 2.00")
    assert lines[2] == "- MISSED: seed 2, B/A not comparable: steps 17 vs 24, reward failures 0 / 0"
    assert lines[3] == "- MISSED: seed 3, B did not finish"
    assert len(lines) == 4  # no C line: C was not run
