# One venv for everything; `make test` and `make demo` set it up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench docs dist check-dist ci clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The docs and release tools go into the same venv, each once (their extras in setup.cfg).
$(VENV)/.installed-docs: $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $@

$(VENV)/.installed-lint: $(STAMP)
	$(PY) -m pip install --quiet -e '.[lint]'
	touch $@

$(VENV)/.installed-release: $(STAMP)
	$(PY) -m pip install --quiet -e '.[release]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

# ruff (lint and format), mypy, and import-linter's contracts (the layer order, setup.cfg [importlinter]).
lint: $(VENV)/.installed-lint
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

demo: $(STAMP)
	$(PY) train_demo.py

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_explain_many.py
	$(PY) benchmarks/bench_families.py
	$(PY) benchmarks/bench_callback.py
	$(PY) benchmarks/bench_cli.py
	$(PY) benchmarks/bench_compile.py

# The site, from docs/ and the docstrings; --strict fails on broken links and unresolved references.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# sdist and wheel into dist/.
dist: $(VENV)/.installed-release
	rm -rf dist build
	$(PY) -m build --outdir dist .

# twine's check of both, then the wheel installed alone (--no-deps) into a new venv that sees the
# dependencies of $(VENV) through a .pth line (installing them anew would download a CUDA torch of
# several GB): the package must import from the wheel, carry py.typed and run its console script.
check-dist: dist
	$(PY) -m twine check --strict dist/*
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PY) -m venv --without-pip "$$tmp/venv" && \
	$(PY) -m pip --python "$$tmp/venv/bin/python" install --quiet --no-deps dist/*.whl && \
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
		> "$$("$$tmp/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_deps.pth" && \
	cd "$$tmp" && "$$tmp/venv/bin/python" -c "import importlib.resources as r, lightning_rollout as lr; \
		assert lr.__file__.startswith('$$tmp'), lr.__file__; assert r.files(lr).joinpath('py.typed').is_file(); \
		from lightning_rollout import AttentionRolloutCallback, explain, explain_many, register_adapter; \
		print('wheel OK:', lr.__version__, lr.__file__)" && \
	"$$tmp/venv/bin/lightning-rollout" --help > /dev/null && echo 'console script OK'

# What CI runs (.ci/run): the tests, the checkers, the site and the release files.
ci: test lint docs check-dist

clean:
	rm -rf $(VENV) *.egg-info site dist build
