# modelport: `make serve` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# KServe's client needs pandas<3, so the interop tests run it from a virtualenv of its own.
KSERVE_VENV ?= .venv-kserve
KSERVE_STAMP := $(KSERVE_VENV)/.installed
# An older scikit-learn in a virtualenv of its own: the version-safety tests save a model with it.
OLDSKLEARN_VENV ?= .venv-oldsklearn
OLDSKLEARN_STAMP := $(OLDSKLEARN_VENV)/.installed
# The native hot path (app/native): built with the machine's C compiler, if it has one.
NATIVE := app/native/hotpath.so

.PHONY: serve dev train test lint format lock clean bench bench-quick proto

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "modelport needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

$(KSERVE_STAMP): tests/e2e/kserve-requirements.txt
	test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tests/e2e/kserve-requirements.txt
	touch $@

$(OLDSKLEARN_STAMP): tests/app/training/oldsklearn-requirements.txt
	test -x $(OLDSKLEARN_VENV)/bin/python || $(PYTHON) -m venv $(OLDSKLEARN_VENV)
	$(OLDSKLEARN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tests/app/training/oldsklearn-requirements.txt
	touch $@

# Without a C compiler this says so and builds nothing; modelport then takes its Python paths.
$(NATIVE): app/native/hotpath.c app/native/build.py $(STAMP)
	$(BIN)/python -m app.native.build

train: $(STAMP)
	$(BIN)/modelport train

serve: train $(NATIVE)
	$(BIN)/modelport serve

dev: train $(NATIVE)
	$(BIN)/modelport dev

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy app routers schemas tests benchmarks

test: lint $(KSERVE_STAMP) $(OLDSKLEARN_STAMP) $(NATIVE)
	KSERVE_PYTHON=$(abspath $(KSERVE_VENV))/bin/python \
	OLDSKLEARN_PYTHON=$(abspath $(OLDSKLEARN_VENV))/bin/python $(BIN)/pytest --durations=30

# modelport against the Flask prototype, a naive FastAPI port and two ceilings, then the overload
# scenario (needs wrk and two cores; ~21 minutes). Trains its models into a temporary store;
# writes benchmarks/results/latest.*.
bench: $(STAMP) $(NATIVE)
	$(BIN)/python -m benchmarks

# The same harness in about a minute, results in a temporary directory: proves it runs.
bench-quick: $(STAMP) $(NATIVE)
	$(BIN)/python -m benchmarks --quick

# The gRPC service's messages and stubs, generated from its .proto by grpcio-tools (a dev
# dependency) and committed beside it: installing modelport or building the image then needs no
# protocol compiler, and a change to the protocol is reviewed as a diff of the generated code.
# Run after editing the .proto; grpcio-tools 1.81.1 writes code that needs grpcio >= 1.81.1 and
# protobuf >= 6.33.5 at run time.
PROTO := app/codecs/grpc/proto/grpc_predict_v2.proto
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. $(PROTO)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Re-pin the whole dependency tree after changing pyproject.toml.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[dev]'
	{ echo "# The whole resolved dependency tree, pinned (regenerate with: make lock)."; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -iv '^modelport'; } > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) $(KSERVE_VENV) $(OLDSKLEARN_VENV) $(NATIVE) .mypy_cache .ruff_cache .pytest_cache
