# Every target bootstraps its environment by itself on a fresh machine (python3.11 with venv is all it needs).
# Two environments, because kfp 2.17 (kubernetes<31) and the current Airflow cncf-kubernetes provider (kubernetes>=36)
# cannot share one: .venv holds everything but Airflow, pinned by constraints.txt (the set the step images install);
# .venv-airflow holds the core with Airflow, pinned by constraints-airflow.txt. `pip check` passes in each.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= tf,onnx,openvino,s3,serving,kfp,dev
STAMP := $(VENV)/.installed
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_BIN := $(AIRFLOW_VENV)/bin
AIRFLOW_EXTRAS ?= airflow,s3,dev
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
PYTEST := -m pytest -n 2 --dist loadgroup -q --durations=15
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_USE_LEGACY_KERAS := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install demo test test-fast bench bench-techniques bench-push bench-scale lint images images-gpu clean help

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
	$(BIN)/python -m pip check
	@touch $(STAMP)

$(AIRFLOW_STAMP): pyproject.toml constraints-airflow.txt
	@test -x $(AIRFLOW_BIN)/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints-airflow.txt -e ".[$(AIRFLOW_EXTRAS)]"
	$(AIRFLOW_BIN)/python -m pip check
	@touch $(AIRFLOW_STAMP)

install: $(STAMP) $(AIRFLOW_STAMP)

demo: $(STAMP)
	$(BIN)/modelpress run examples/digits_mlp.yaml --out runs/demo --overwrite

# The container tests need an engine and the images: containers/test-engine.sh starts one where it can (root) and
# builds them (layer-cached); elsewhere those tests skip and say why.
# The suite runs twice: in .venv without the Airflow tests, then the Airflow tests (modules test_airflow_*.py) in
# .venv-airflow, whose steps and kfp compiles run in .venv's Python (MODELPRESS_STEP_PYTHON). Both run even if the
# first fails; the target fails if either did.
test: $(STAMP) $(AIRFLOW_STAMP)
	PYTHON=$(BIN)/python sh containers/test-engine.sh
	status=0; \
	$(BIN)/python $(PYTEST) -m "not airflow" || status=1; \
	MODELPRESS_STEP_PYTHON=$(abspath $(BIN)/python) $(AIRFLOW_BIN)/python $(PYTEST) -m airflow || status=1; \
	exit $$status

test-fast: $(STAMP) $(AIRFLOW_STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not airflow"
	MODELPRESS_STEP_PYTHON=$(abspath $(BIN)/python) $(AIRFLOW_BIN)/python -m pytest -q -m "airflow and not slow"

bench: $(STAMP)
	$(BIN)/python -m bench.reference

bench-techniques: $(STAMP)
	$(BIN)/python -m bench.techniques

bench-push: $(STAMP)
	$(BIN)/python -m bench.push_memory

# Data larger than memory: >= 8 GB of shards on local disk and ~1 GB on a local S3 endpoint (bench/scale.py).
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale

lint: $(STAMP)
	$(BIN)/ruff check .

images: $(STAMP)
	$(BIN)/python containers/build.py

images-gpu: $(STAMP)
	$(BIN)/python containers/build.py --gpu

clean:
	rm -rf runs .pytest_cache
