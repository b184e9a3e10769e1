#!/usr/bin/env bash
# Create (or reuse) the project venv, install the pinned CPU recipe, build the native extension.
# Usage: bash scripts/setup_env.sh [VENV_DIR]   (default: .venv in the repo root)
# Idempotent: a venv that already has everything is reused, and the extension is rebuilt only when its sources,
# setup.py or the installed torch changed since the last build (a stamp in the venv), or it does not import.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.venv}"
py="${PYTHON:-python3}"
start=$(date +%s)
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
pip() { "$venv/bin/python" -m pip "$@"; }
if ! "$venv/bin/python" -c "import torch, torchrec, fbgemm_gpu, numba, pandas, matplotlib, tqdm, pytest, tensordict, torchmetrics, iopath" 2>/dev/null; then
  pip install -q -r "$root/requirements.txt"
  # torchrec without its declared deps: its metadata asks for the CUDA fbgemm-gpu, which would replace the CPU one.
  # pip then prints "torchrec 1.8.0 requires fbgemm-gpu, which is not installed": expected, fbgemm-gpu-cpu provides it.
  pip install -q --no-deps torchrec==1.8.0
  pip install -q -r "$root/requirements-torchrec-deps.txt"
fi
# The native extension (C++ always; CUDA sources too when torch has CUDA and nvcc is present).
stamp_file="$venv/.emb_opt_extension_stamp"
stamp="$(cd "$root" && { find cuda_ext/csrc -type f | sort | xargs cat; cat setup.py; \
  "$venv/bin/python" -c 'import torch; print(torch.__version__, torch.version.cuda)'; } | sha256sum | cut -d' ' -f1)"
status='import cuda_ext._C, cuda_ext; print("emb_opt native extension:", cuda_ext.extension_status())'
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ] || ! (cd "$root" && "$venv/bin/python" -c "$status" 2>/dev/null); then
  ( cd "$root" && MAX_JOBS="${MAX_JOBS:-2}" "$venv/bin/python" -m pip install -q --no-build-isolation --no-deps -e . )
  echo "$stamp" > "$stamp_file"
  (cd "$root" && "$venv/bin/python" -c "$status")
fi
echo "setup_env: done in $(( $(date +%s) - start )) s (venv: $venv)"
