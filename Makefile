# One-command entry points. Each target creates .venv and installs pinned dependencies itself.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench kernels clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and exactly pinned: an unpinned resolver pass would fetch a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Without a C++ compiler talksplat still works on its (slow) reference backends: warn, don't stop.
kernels: $(STAMP)
	$(VENV)/bin/talksplat doctor --build || echo "warning: C++ kernels unavailable (see above); using the slow pure-PyTorch reference backends"

test: kernels
	$(PY) -m pytest -q

demo: kernels
	$(VENV)/bin/talksplat demo -o demo_out

bench: kernels
	$(PY) benchmarks/rasterizer.py
	$(PY) benchmarks/hashgrid.py

clean:
	rm -rf $(VENV) build *.egg-info
