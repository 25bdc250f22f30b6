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

.PHONY: all deps test-deps build demo test test-fast clean

all: build

deps:
	scripts/install-deps.sh build

test-deps:
	scripts/install-deps.sh test

build: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	cmake --build $(BUILD_DIR) -j $(JOBS)

demo: build
	$(PIXSEEK) build "$(IMAGES)" --db "$(DB)"
	$(PIXSEEK) serve --db "$(DB)" --host $(HOST) --port $(PORT)

test: test-deps build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900

test-fast: test-deps build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L fast

clean:
	rm -rf $(BUILD_DIR)
