# One venv for everything; `make test` and `make demo` set it up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	$(PY) train_demo.py

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_explain_many.py
	$(PY) benchmarks/bench_families.py
	$(PY) benchmarks/bench_callback.py
	$(PY) benchmarks/bench_cli.py
	$(PY) benchmarks/bench_compile.py

clean:
	rm -rf $(VENV) *.egg-info
