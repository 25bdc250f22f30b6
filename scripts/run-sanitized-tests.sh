#!/usr/bin/env bash
# Runs the fast tests (ctest -L fast) of a tree built with PIXSEEK_SANITIZE=ON
# (`make build-asan`) under AddressSanitizer, LeakSanitizer and
# UndefinedBehaviorSanitizer; any report fails its test.
# Usage: scripts/run-sanitized-tests.sh ASAN_BUILD_DIR [ctest arguments...]
set -euo pipefail

if (($# < 1)); then
  echo "usage: $0 ASAN_BUILD_DIR [ctest arguments...]" >&2
  exit 2
fi
build=$1
shift
if [[ ! -f $build/CTestTestfile.cmake ]]; then
  echo "$build is not a configured sanitizer tree: run 'make build-asan' first" >&2
  exit 1
fi
source_dir=$(cd "$(dirname "$0")/.." && pwd)
# detect_leaks is on (ASan's default on Linux, said here so it stays on); the
# suppression file names each third-party leak we accept, and why.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:check_initialization_order=1:strict_init_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$source_dir/tests/sanitizers/lsan.supp:print_suppressions=0}
# Left out, and run by the plain tree: DiskIndexTest.KillAtRandomMoments
# SIGKILLs a writer at random moments and requires that some compaction
# committed between kills; at the sanitizers' speed (about 3x slower) none
# may, so it fails by timing, not by a finding. layering reads #include
# lines with Python: nothing compiled to check.
exec ctest --test-dir "$build" -L fast -E '^(DiskIndexTest\.KillAtRandomMoments.*|layering)$' \
  --output-on-failure -j "$(nproc)" "$@"
