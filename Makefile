# The two commands a new user needs: `make app` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
PORT ?= 8501

.PHONY: setup app test test-fast bench gpu-wheels gpu-check clean-venv browser

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# What the person who starts the server decides (app/settings.py, README "Running the app for a group"):
# CHECKPOINT_DIRS: folders (':'-separated) the sidebar may read checkpoints from (empty: checkpoints/ and
# the Hugging Face cache); ALLOW_PICKLE=1 offers reading pickled weights; STORE_MB / STORE_HOURS: memory
# and time kept for users' work; WORKERS: traces at once (empty: CPUs / 2).
CHECKPOINT_DIRS ?=
ALLOW_PICKLE ?= 0
STORE_MB ?= 2048
STORE_HOURS ?= 24
WORKERS ?=
# `make app PORT=8600` for another port; the other settings are in .streamlit/config.toml.
app: setup
	RMT_LENS_CHECKPOINT_DIRS="$(CHECKPOINT_DIRS)" RMT_LENS_ALLOW_PICKLE="$(ALLOW_PICKLE)" \
	RMT_LENS_STORE_MB="$(STORE_MB)" RMT_LENS_STORE_HOURS="$(STORE_HOURS)" RMT_LENS_WORKERS="$(WORKERS)" \
	$(VENV)/bin/streamlit run app/server.py --server.headless true --server.port $(PORT)

test: setup browser
	$(PY) -m pytest -q

# Browser tests drive Debian's chromium (never a downloaded browser); the offline test traces the
# server's system calls with Debian's strace. Install them when missing; if that fails those tests
# skip with a loud "BROWSER TESTS SKIPPED" / "OFFLINE TRACE SKIPPED" reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests and figure export..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "!!! could not install chromium: browser tests will be SKIPPED"; }
	@command -v strace >/dev/null 2>&1 || { \
	  echo "installing Debian's strace for the offline test..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null) \
	  || echo "!!! could not install strace: the offline test will be SKIPPED"; }

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser"

bench: setup
	$(PY) benchmarks/run_all.py

# Wheels a bare CUDA machine (Python 3.12, torch + transformers there, no network) lacks; carry
# the folder along and run `benchmarks/gpu_check.sh` there (see that script).
GPU_WHEELS ?= gpu-wheels
gpu-wheels: setup
	$(PY) benchmarks/gpu_wheels.py --dest $(GPU_WHEELS)

gpu-check:
	benchmarks/gpu_check.sh

clean-venv:
	rm -rf $(VENV)
