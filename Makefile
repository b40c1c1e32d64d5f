PY := .venv/bin/python

.PHONY: setup demo test lint bench-unstructured

setup:
	@bash scripts/setup.sh

# Main job: train the reference CNN on Fashion-MNIST, prune, fine-tune, report (docs in README).
demo: setup
	$(PY) -m netslim demo --out runs/demo

test: setup
	$(PY) -m pytest tests

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

bench-unstructured: setup
	$(PY) bench/unstructured.py
