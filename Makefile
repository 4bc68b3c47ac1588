# Set-up and entry points. `make run` trains and evaluates the default task; `make test` runs the tests.
# Both create .venv if missing and install the tested CPU torch pin first (constraints.txt),
# so pip never pulls a CUDA build of torch on this machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# One torch thread: on small 2-core machines the default thread pool makes tiny networks ~40x slower.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test,extra,zoo,rllib,popgym]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) examples/train.py

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check sb3_attn_ac tests benchmarks examples
	$(VENV)/bin/ruff format --check sb3_attn_ac tests benchmarks examples

bench: $(STAMP)
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
