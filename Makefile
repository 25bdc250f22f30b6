# pixseek: two commands do all set-up on a fresh Debian 12 machine.
#   make demo IMAGES=~/Pictures   install, build, index IMAGES, serve http://127.0.0.1:8080
#   make test                     install, build, run every test
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
IMAGES ?= $(HOME)/Pictures
DB ?= $(HOME)/.local/share/pixseek/demo.db
HOST ?= 127.0.0.1
PORT ?= 8080
PIXSEEK := $(BUILD_DIR)/src/cli/pixseek
# The sanitizer tree (GCC, ASan + UBSan, fast tests only) and the fuzz tree
# (clang, libFuzzer); both leave libtorch out. `make test` builds and runs
# both through $(BUILD_DIR)'s CTest (tests sanitizers.fast and fuzz.*).
ASAN_DIR ?= build-asan
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 20
FUZZ_CXX ?= clang++-16

.PHONY: all deps test-deps build build-asan build-fuzz demo test test-fast test-sanitizers test-fuzz clean

all: build

deps:
	scripts/install-deps.sh build

test-deps:
	scripts/install-deps.sh test

# RelWithDebInfo with -g1 (line tables: backtraces and perf still name file
# and line) rather than -g: full debug info took a third of the compile time
# of the JSON- and HTTP-heavy files (nlohmann json: 5.3 s vs 3.3 s of CPU),
# and CI builds this tree from cold. `make build BUILD_TYPE=Debug` for a
# debugger.
RELWITHDEBINFO_FLAGS ?= -O2 -g1 -DNDEBUG

build: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$(RELWITHDEBINFO_FLAGS)" \
	  -DPIXSEEK_ASAN_BUILD_DIR=$(abspath $(ASAN_DIR)) -DPIXSEEK_FUZZ_BUILD_DIR=$(abspath $(FUZZ_DIR)) \
	  -DPIXSEEK_FUZZ_SECONDS=$(FUZZ_SECONDS)
	cmake --build $(BUILD_DIR) -j $(JOBS)

build-asan: test-deps
	cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DPIXSEEK_SANITIZE=ON \
	  -DPIXSEEK_WITH_TORCH=OFF
	cmake --build $(ASAN_DIR) -j $(JOBS) --target fast_tests

build-fuzz: test-deps
	cmake -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DCMAKE_CXX_COMPILER=$(FUZZ_CXX) \
	  -DPIXSEEK_BUILD_FUZZERS=ON -DPIXSEEK_WITH_TORCH=OFF
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzzers

demo: build
	$(PIXSEEK) build "$(IMAGES)" --db "$(DB)"
	$(PIXSEEK) serve --db "$(DB)" --host $(HOST) --port $(PORT)

test: test-deps build build-asan build-fuzz
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900

test-sanitizers: build-asan
	scripts/run-sanitized-tests.sh $(ASAN_DIR)

test-fuzz: build-fuzz
	for f in decode_fuzz flat_index_fuzz disk_graph_fuzz model_card_fuzz; do \
	  scripts/run-fuzzer.sh $(FUZZ_DIR) $$f $(FUZZ_SECONDS) || exit 1; done

test-fast: test-deps build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L fast

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(FUZZ_DIR)
