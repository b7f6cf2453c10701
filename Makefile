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

.PHONY: install demo test test-fast bench bench-techniques bench-push lint images clean help

help:
	@echo "make demo    run examples/digits_mlp.yaml end to end into runs/demo"
	@echo "make test    run the whole test suite"
	@echo "make bench   run the reference benchmark (bench/)"
	@echo "make lint    ruff over the project"
	@echo "make images  build the container images (containers/; needs a Docker engine)"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/modelpress run examples/digits_mlp.yaml --out runs/demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

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

clean:
	rm -rf runs .pytest_cache
