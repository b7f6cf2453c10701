# Every target bootstraps .venv by itself on a fresh machine (python3.11 with venv is all it needs).
# Versions are pinned by constraints.txt: the same set the container images install.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= tf,onnx,openvino,s3,serving,kfp,airflow,dev
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_USE_LEGACY_KERAS := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install demo test test-fast bench bench-techniques bench-push lint images images-gpu clean help

help:
	@echo "make demo    run examples/digits_mlp.yaml end to end into runs/demo"
	@echo "make test    run the whole test suite"
	@echo "make bench   run the reference benchmark (bench/)"
	@echo "make lint    ruff over the project"
	@echo "make images  build the CPU container images: base, tf, openvino (containers/; needs a Docker engine)"
	@echo "make images-gpu  also the CUDA build of tf and the tensorrt image"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/modelpress run examples/digits_mlp.yaml --out runs/demo --overwrite

# The container tests need an engine and the images: containers/test-engine.sh starts one where it can (root) and
# builds them (layer-cached); elsewhere those tests skip and say why.
test: $(STAMP)
	PYTHON=$(BIN)/python sh containers/test-engine.sh
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench.reference

bench-techniques: $(STAMP)
	$(BIN)/python -m bench.techniques

bench-push: $(STAMP)
	$(BIN)/python -m bench.push_memory

lint: $(STAMP)
	$(BIN)/ruff check .

images: $(STAMP)
	$(BIN)/python containers/build.py

images-gpu: $(STAMP)
	$(BIN)/python containers/build.py --gpu

clean:
	rm -rf runs .pytest_cache
