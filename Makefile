# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean bench compare compare-code compare-arxiv compare-roofline results

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m polyserve.cli.demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# the comparisons behind README "Results": the headline (Azure conversation), the code trace, the arXiv lengths,
# and the roofline latency model as a sensitivity check; `make results` runs all four (see README for times)
DATA := src/polyserve/data/traces
COMPARE_ARGS ?= --duration 150 --warmup 50 --seeds 0,1,2 --co-chunk-budgets 512,2048,8192 --prefill-fractions 0.25,0.5,0.75 \
	--sensitivity-model none --rate-sweep '' --fleet-sizes ''

compare: $(STAMP)
	$(BIN)/polyserve compare --out runs/compare $(COMPARE_ARGS)

compare-code: $(STAMP)
	$(BIN)/polyserve compare --out runs/compare_code --trace $(DATA)/AzureLLMInferenceTrace_code.csv $(COMPARE_ARGS)

compare-arxiv: $(STAMP)
	$(BIN)/polyserve compare --out runs/compare_arxiv \
		--trace $(DATA)/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv $(COMPARE_ARGS)

compare-roofline: $(STAMP)
	$(BIN)/polyserve compare --out runs/compare_roofline --latency-model roofline $(COMPARE_ARGS)

results: compare compare-code compare-arxiv compare-roofline

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
