#!/usr/bin/env bash
# Runs one libFuzzer target of tests/fuzz for a fixed time over its seed
# corpus; fails (non-zero) on a crash, a leak, undefined behaviour, an input
# that runs over the per-input timeout, or a seed that cannot be made.
# Usage: scripts/run-fuzzer.sh FUZZ_BUILD_DIR FUZZER SECONDS
# (FUZZ_BUILD_DIR is a tree configured with PIXSEEK_BUILD_FUZZERS=ON, e.g.
# `make build-fuzz`.) The corpus grows in FUZZ_BUILD_DIR/fuzz-corpus/FUZZER
# between runs; a crashing input is saved as
# FUZZ_BUILD_DIR/fuzz-artifacts/FUZZER-crash-<sha1>, which replays with
#   FUZZ_BUILD_DIR/tests/FUZZER FUZZ_BUILD_DIR/fuzz-artifacts/FUZZER-crash-<sha1>
set -euo pipefail

if (($# != 3)); then
  echo "usage: $0 FUZZ_BUILD_DIR FUZZER SECONDS" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
fuzzer=$2
seconds=$3
bin=$build/tests/$fuzzer
if [[ ! -x $bin || ! -x $build/tests/fuzz_seeds ]]; then
  echo "$bin or fuzz_seeds is not built: run 'make build-fuzz' first" >&2
  exit 1
fi
source_dir=$(cd "$(dirname "$0")/.." && pwd)
# clang's runtimes symbolize with llvm-symbolizer, found on PATH by its plain
# name only; Debian's llvm-16 installs it under /usr/lib/llvm-16/bin.
if [[ -z ${ASAN_SYMBOLIZER_PATH:-} ]]; then
  for s in llvm-symbolizer-16 llvm-symbolizer; do
    if command -v "$s" >/dev/null; then
      export ASAN_SYMBOLIZER_PATH=$(command -v "$s")
      break
    fi
  done
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$source_dir/tests/sanitizers/lsan.supp:print_suppressions=0}

seeds=$build/fuzz-seeds/$fuzzer
corpus=$build/fuzz-corpus/$fuzzer
artifacts=$build/fuzz-artifacts
mkdir -p "$corpus" "$artifacts"
"$build/tests/fuzz_seeds" "$fuzzer" "$seeds"
# -timeout: one input running longer is a failure (a hang); -rss_limit_mb
# keeps an allocation bomb from taking the machine. New inputs go to the
# first directory (the corpus); the seeds are only read.
cd "$build"
exec "$bin" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 -print_funcs=0 \
  -artifact_prefix="$artifacts/$fuzzer-" "$corpus" "$seeds"
