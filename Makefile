# synthvox: every target installs what it needs into a local virtual environment (.venv).
# Override on the command line, e.g. `make synth-shards SAMPLES=1000000 SCHEDULER=tcp://host:8786`.

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip
SYNTHVOX := $(VENV)/bin/synthvox
STAMP    := $(VENV)/.installed

OUT       ?= out
SIZE      ?= 64
SAMPLES   ?= 64
TASK_SIZE ?= 16
FORMATS   ?= wds
SCHEDULER ?=
CONFIG    ?=
STEPS     ?= 200
CROP      ?= 32
CKPT      ?= bundled
STORE     ?= $(OUT)/store
RUN       ?= $(OUT)/run

.PHONY: setup test test-slow demo bench synth-shards pretrain eval data browser clean help

help:
	@echo "make demo         the whole flow on embedded defaults (installs into $(VENV))"
	@echo "make test         install and run the default test tier"
	@echo "make test-slow    the slow test tier"
	@echo "make bench        benchmarks, appended to benchmarks/RESULTS.md"
	@echo "make synth-shards SAMPLES=N [SCHEDULER=tcp://..] [FORMATS=wds,zarr] [SIZE=D]"
	@echo "make pretrain     STORE=.. RUN=.. [STEPS=N] [CROP=C]"
	@echo "make eval         CKPT=..  the real-data evaluation and report"

$(STAMP): pyproject.toml setup.py constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test,data,onnx]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP) data browser
	$(PY) -m pytest -q --durations=20

test-slow: $(STAMP) data
	$(PY) -m pytest -q --durations=20 -m slow

demo: $(STAMP) data
	$(SYNTHVOX) demo --out $(OUT)/demo

bench: $(STAMP) data
	$(PIP) install -q -c constraints.txt -e '.[test,data,onnx,bench]'  # the peer packages (benchmark-only)
	$(PY) -m benchmarks.run_all

synth-shards: $(STAMP)
	$(SYNTHVOX) synth-shards --out $(STORE) --samples $(SAMPLES) --task-size $(TASK_SIZE) \
		--size $(SIZE) --formats $(FORMATS) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) \
		$(if $(CONFIG),--config $(CONFIG))

pretrain: $(STAMP)
	$(SYNTHVOX) pretrain --store $(STORE) --out $(RUN) --steps $(STEPS) --crop $(CROP) \
		$(if $(CONFIG),--config $(CONFIG))

eval: $(STAMP) data
	$(SYNTHVOX) eval --ckpt $(CKPT) --out $(OUT)/eval

# Real data for examples, tests and the demo: Debian's mricron-data (Colin27 + AAL) where apt
# works; nilearn's MNI152 files come with the Python install either way.
MRICRON := /usr/share/mricron/templates/ch2bet.nii.gz
data:
	@if [ -f $(MRICRON) ]; then echo "mricron-data: installed"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q mricron-data >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q mricron-data >/dev/null 2>&1)) \
		&& echo "mricron-data: installed with apt" || echo "mricron-data: apt failed; using nilearn's MNI152 data alone"; \
	else echo "mricron-data: not installable here (needs root apt); using nilearn's MNI152 data alone"; fi

# Headless Chromium for the report's page-width test (tests/test_report_browser.py): Debian's
# chromium where apt works and we are root; the test is skipped with the reason elsewhere.
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: installed"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1)) \
		&& echo "chromium: installed with apt" || echo "chromium: apt failed; the report page-width test will be skipped"; \
	else echo "chromium: not installable here (needs root apt); the report page-width test will be skipped"; fi

clean:
	rm -rf $(OUT)
