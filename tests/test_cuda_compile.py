"""Compile check of the CUDA kernels on a machine with nvcc but no GPU (scripts/check_cuda_compile.sh):
every cuda_ext/csrc/**/*.cu must compile for sm_90 against the installed torch's headers. Nothing runs on a
GPU here; experiments/gpu_check.py does that on a lent GPU machine."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "check_cuda_compile.sh")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH (no CUDA toolkit to compile with)"),
]


def test_every_cuda_source_compiles_for_sm90():
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(["bash", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"CUDA compile check failed:\n{result.stdout}\n{result.stderr}"
    sources = [line for line in result.stdout.splitlines() if line.startswith("OK ")]
    assert any("vhpi.cu" in line for line in sources) and any("chunk_bag.cu" in line for line in sources)
    assert any("hash.cu" in line for line in sources)
