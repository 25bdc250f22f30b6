#!/usr/bin/env bash
# Installs the Debian 12 packages pixseek needs to build and test, if missing.
# Usage: scripts/install-deps.sh [build|test]
set -euo pipefail

what=${1:-build}
pkgs=(build-essential cmake pkg-config ccache
      libopencv-dev libturbojpeg0-dev libjpeg62-turbo-dev libexif-dev libsqlite3-dev
      libcpp-httplib-dev nlohmann-json3-dev libcli11-dev libssl-dev zlib1g-dev
      libgif-dev libfaiss-dev liburing-dev libxxhash-dev libhnswlib-dev
      libtorch-dev libonnx-dev libmariadb-dev libhiredis-dev libtomlplusplus-dev liburiparser-dev
      # An optimised BLAS: installing it switches libblas.so.3 (Debian
      # alternatives) from the reference BLAS that libtorch, FAISS and numpy
      # otherwise use. ViT-B/16's linear layers: 0.14 -> 2.6 images/s.
      libopenblas0-openmp)
if [[ $what == test ]]; then
  # Real servers and a real browser for the tests (started by the tests
  # themselves on 127.0.0.1), torchvision to export test models, OpenCV's
  # Python bindings for bench embed's Python pipeline of ONNX models.
  pkgs+=(libgtest-dev curl mariadb-server redis-server chromium python3-torchvision python3-opencv python3-onnx)
  # The fuzz tree (make build-fuzz): clang 16 (Debian's default clang 14
  # lacks more of the C++20 that GCC 12 accepts, e.g. lambdas capturing
  # structured bindings), libFuzzer and clang's sanitizer runtimes, its
  # OpenMP (FAISS needs one), and llvm-symbolizer (llvm-16) so that reports
  # name files and lines.
  pkgs+=(clang-16 libclang-rt-16-dev libomp-16-dev llvm-16)
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    pkgs+=(nodejs npm)
  fi
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
((${#missing[@]} == 0)) && exit 0

echo "Installing missing packages: ${missing[*]}" >&2
sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
