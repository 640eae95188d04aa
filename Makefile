# Two entry points for a fresh machine (see README):
#   make demo  - set up .venv and run the main job
#   make test  - set up .venv and run the test suite
# Documentation: make docs (site/ with mkdocs --strict), make notebooks (execute notebooks/ at
# QUICK size with nbmake); both install the `docs` extra first.
PYTHON ?= python3
VENV ?= .venv
# torch first, pinned to the CPU build these machines keep on local disk, so the package's
# permissive range (torch>=2.2) never pulls a multi-GB CUDA build; override e.g. TORCH_SPEC="torch".
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint typecheck bench docs notebooks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# setup also builds the C++ kernels once (into $TORCH_EXTENSIONS_DIR or torch's default cache),
# so the first `make demo` is not charged the minute(s) of compilation.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,plot,rl,export]"
	$(BIN)/python -m r2dn_control.nn.cpp || echo "C++ kernels not built: the PyTorch path is used"
	touch $@

setup: $(VENV)/.installed

$(VENV)/.installed-docs: $(VENV)/.installed setup.cfg
	$(BIN)/python -m pip install --quiet -e ".[dev,plot,rl,docs]"
	touch $@

demo: setup
	$(BIN)/r2dn-control run youla --quick --model both

# Extra pytest arguments, e.g. PYTEST_ARGS="-n 2 --dist loadgroup" (pytest-xdist, in the dev
# extra; each worker runs conftest's one-thread setting). Serial by default: on the shared
# 2-core machine two workers were not faster on the slice measured.
PYTEST_ARGS ?=
# The real-data tests read the F-16 benchmark from R2DN_F16_DIR (default: ../shared/data/f16
# when that folder exists; they skip with the reason otherwise).
test: setup
	$(if $(wildcard $(F16_DIR)/.),R2DN_F16_DIR=$(F16_DIR)) $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check r2dn_control envs tests benchmarks

# Static types of the package (configuration: [tool.mypy] in pyproject.toml).
typecheck: setup
	$(BIN)/mypy r2dn_control

docs: $(VENV)/.installed-docs
	$(BIN)/mkdocs build --strict

# The notebooks are jupytext percent scripts (no outputs stored); they are converted to
# .ipynb under build/notebooks and executed there, QUICK-sized, one thread each.
NOTEBOOK_TIMEOUT ?= 300
# The real F-16 records for notebooks/sysid.py (never shipped); without them it uses Bouc–Wen.
F16_DIR ?= $(abspath ../shared/data/f16)
NOTEBOOK_ENV := QUICK=1 OMP_NUM_THREADS=1 MPLBACKEND=Agg $(if $(wildcard $(F16_DIR)/.),R2DN_F16_DIR=$(F16_DIR))
notebooks: $(VENV)/.installed-docs
	rm -rf build/notebooks && mkdir -p build/notebooks
	for nb in notebooks/*.py; do \
		$(BIN)/jupytext --quiet --to ipynb --output build/notebooks/$$(basename $$nb .py).ipynb $$nb || exit 1; \
	done
	# Compile (or load) the C++ kernels once, outside the per-notebook timeout; a failed build
	# only means the pure-torch path runs.
	-$(BIN)/python -m r2dn_control.nn.cpp
	cd build/notebooks && $(NOTEBOOK_ENV) ../../$(BIN)/python -m pytest \
		--nbmake --nbmake-timeout=$(NOTEBOOK_TIMEOUT) -p no:cacheprovider -q *.ipynb

bench: setup
	$(BIN)/python benchmarks/bench_r2dn.py

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .hypothesis
