# Two entry points for a fresh machine (see README):
#   make demo  - set up .venv and run the main job
#   make test  - set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
# torch first, pinned to the CPU build these machines keep on local disk, so the package's
# permissive range (torch>=2.2) never pulls a multi-GB CUDA build; override e.g. TORCH_SPEC="torch".
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,plot,rl,export]"
	# build the C++ kernels once here (into $$TORCH_EXTENSIONS_DIR or torch's default cache), so
	# the first `make demo` is not charged a minute of compilation
	$(BIN)/python -m r2dn_control.nn.cpp || echo "C++ kernels not built: the PyTorch path is used"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/r2dn-control run youla --quick --model both

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check r2dn_control envs tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_r2dn.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
