#!/usr/bin/env bash
# Compile check of every CUDA source (cuda_ext/csrc/**/*.cu) against the torch headers of a CPU-only torch,
# on a machine with nvcc but no GPU: proves the kernels compile for sm_90 (what the lent H100/H200 run),
# without linking or running anything. Objects go to a temp dir; one line per file; exit 1 on any failure.
#
# The CPU torch wheel lacks c10/cuda/impl/cuda_cmake_macros.h (generated at CUDA builds), so a shim dir with
# a minimal one goes first on the include path. Sources must include <c10/cuda/CUDAStream.h>, not
# <ATen/cuda/CUDAContext.h>: the latter pulls cusparse.h, which this toolkit lacks.
#
# Usage: scripts/check_cuda_compile.sh [file.cu ...]   (default: all of them)
#   PYTHON=/path/to/python (default: the repository's .venv, else python3), NVCC=nvcc, ARCH=sm_90,
#   JOBS=<parallel compiles> (default: number of CPUs, at most 4), KEEP=1 keeps the temp dir.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
NVCC="${NVCC:-nvcc}"
ARCH="${ARCH:-sm_90}"
command -v "$NVCC" >/dev/null 2>&1 || { echo "check_cuda_compile: nvcc not found on PATH" >&2; exit 2; }

TORCH_INCLUDES="$("$PYTHON" -c 'from torch.utils.cpp_extension import include_paths; print(*include_paths())')" ||
  { echo "check_cuda_compile: cannot import torch with $PYTHON" >&2; exit 2; }
PY_INCLUDE="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
CXX11_ABI="$("$PYTHON" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"

WORK="$(mktemp -d /tmp/emb_opt_cuda_check.XXXXXX)"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/shim/c10/cuda/impl" "$WORK/obj" "$WORK/log"
cat >"$WORK/shim/c10/cuda/impl/cuda_cmake_macros.h" <<'SHIM'
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
SHIM

INCLUDES=(-I"$WORK/shim")
for dir in $TORCH_INCLUDES; do INCLUDES+=(-I"$dir"); done
INCLUDES+=(-I"$ROOT/cuda_ext/csrc" -I"$PY_INCLUDE")
FLAGS=(-std=c++20 -O3 --expt-relaxed-constexpr -arch="$ARCH" -D_GLIBCXX_USE_CXX11_ABI="$CXX11_ABI"
       -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H -DEMB_OPT_WITH_CUDA=1
       -Xcompiler -fPIC --resource-usage -Xptxas -warn-spills)

if [ "$#" -gt 0 ]; then
  SOURCES=("$@")
else
  mapfile -t SOURCES < <(cd "$ROOT" && find cuda_ext/csrc -name '*.cu' | sort)
fi
[ "${#SOURCES[@]}" -gt 0 ] || { echo "check_cuda_compile: no .cu files found" >&2; exit 2; }

compile_one() {  # $1 = source path relative to ROOT; writes $WORK/log/<name>.{log,rc,sec}
  local src="$1" name start
  name="$(echo "$src" | tr '/' '_')"
  start=$(date +%s)
  (cd "$ROOT" && "$NVCC" "${FLAGS[@]}" "${INCLUDES[@]}" -c "$src" -o "$WORK/obj/$name.o") >"$WORK/log/$name.log" 2>&1
  echo $? >"$WORK/log/$name.rc"
  echo $(( $(date +%s) - start )) >"$WORK/log/$name.sec"
}

JOBS="${JOBS:-$(nproc 2>/dev/null || echo 1)}"
[ "$JOBS" -gt 4 ] && JOBS=4
running=0
for src in "${SOURCES[@]}"; do
  compile_one "$src" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait

failed=0
for src in "${SOURCES[@]}"; do
  name="$(echo "$src" | tr '/' '_')"
  rc="$(cat "$WORK/log/$name.rc")"
  sec="$(cat "$WORK/log/$name.sec")"
  # the resource report, summarised for our kernels (namespace emb_opt) apart from library ones (cub):
  # "<n> kernels (<m> ours), ours: max <r> registers/thread, <k> spilling"
  summary="$(awk '
    /Compiling entry function/ { ours = ($0 ~ /emb_opt/); total++; if (ours) mine++ }
    /^ *[0-9]+ bytes stack frame/ { split($0, f, ","); n = f[2] + 0; if (ours && n > 0) spill++; if (!ours && n > 0) libspill++ }
    /Used [0-9]+ registers/ { r = $0; sub(/.*Used /, "", r); r += 0; if (ours && r > maxr) maxr = r }
    END { printf "%d kernels (%d ours); ours: max %d registers/thread, %d spilling; library kernels spilling: %d",
                 total, mine, maxr, spill, libspill }' "$WORK/log/$name.log")"
  if [ "$rc" = 0 ]; then
    echo "OK    $src (${sec}s; $summary)"
    if [ "${VERBOSE:-0}" = 1 ]; then sed 's/^/      /' "$WORK/log/$name.log"; fi
  else
    failed=$((failed + 1))
    echo "FAIL  $src (${sec}s, nvcc exit $rc):"
    grep -v '^ptxas info\|^    \(Compiling\|Function properties\|[0-9]* bytes stack\|Used\)' "$WORK/log/$name.log" | head -40 | sed 's/^/      /'
  fi
done
if [ "$failed" -gt 0 ]; then
  echo "check_cuda_compile: $failed of ${#SOURCES[@]} CUDA sources failed ($ARCH)"
  exit 1
fi
echo "check_cuda_compile: all ${#SOURCES[@]} CUDA sources compile ($ARCH, $("$NVCC" --version | grep -o 'release [0-9.]*'))"
