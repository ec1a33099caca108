# Moat — top-level entry points. Each target is complete on a fresh Debian 12 machine as
# root: it installs missing packages (scripts/install-deps.sh), configures, builds and runs.
#
#   make demo    build, then run the demo on this machine: one swtpm per device, the TPM key
#                store (KEY_STORE=software: the development store, no swtpm)
#   make test    build, then run every test (unit, integration)
#   make fuzz    build the libFuzzer targets with clang-19 and run each for FUZZ_SECONDS
#   make bench   build, then run the benchmarks beside `openssl speed`
#   make format  clang-format all sources

BUILD_DIR ?= build
FUZZ_BUILD_DIR ?= build-fuzz
FUZZ_SECONDS ?= 30
JOBS ?= $(shell nproc)
KEY_STORE ?=
CMAKE_FLAGS ?=

.PHONY: all deps configure build test demo fuzz bench format clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

demo: build
	@bash scripts/demo.sh $(BUILD_DIR) $(if $(KEY_STORE),--key-store $(KEY_STORE))

fuzz: deps
	@bash scripts/fuzz.sh $(FUZZ_BUILD_DIR) $(FUZZ_SECONDS)

bench: build
	@bash bench/run.sh $(BUILD_DIR)

format:
	@find src apps tests fuzz bench samples -name '*.h' -o -name '*.cc' | xargs clang-format -i

clean:
	@rm -rf $(BUILD_DIR) $(FUZZ_BUILD_DIR) demo-data
