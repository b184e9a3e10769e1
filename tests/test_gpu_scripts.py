"""The device scripts' logic, run here on the compiled CPU kernels (they run for real on a lent GPU machine):
experiments/bench_gpu.py --cpu-smoke runs the whole bench at tiny sizes. (The kernels themselves are held to the
references on every device by tests/test_kernels_*.py.)"""
import csv
import os
import subprocess
import sys

import pytest

import cuda_ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not cuda_ext.extension_loaded(), reason="native extension not built"),
]


def run_script(args, tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHONUNBUFFERED="1")
    env.pop("EMB_OPT_DISABLE_EXTENSION", None)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_bench_cpu_smoke_writes_every_stage(tmp_path):
    result = run_script(["experiments/bench_gpu.py", "--cpu-smoke", "--budgets", "1.0,0.1"], tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    with open(tmp_path / "bench_gpu.csv") as handle:
        rows = list(csv.DictReader(handle))
    stages = {(r["method"], r["stage"]) for r in rows}
    for stage in ("unique", "lookup", "fwd_kernel", "bwd_kernel", "fwd", "fwd_bwd"):
        assert ("fiited", stage) in stages
    assert ("embedding_bag", "fwd_bwd") in stages and ("copy", "d2d") in stages
    assert all(float(r["ms"]) > 0 for r in rows)


def test_store_check_drives_the_store_like_the_module():
    """experiments/gpu_store_check.py's train_step (what runs on the GPU, without TorchRec) leaves the store in
    exactly the state FiitedEmbeddingBagCollection's own training step leaves it in, resizes included."""
    import torch
    from torchrec.modules.embedding_configs import EmbeddingBagConfig
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from emb_opt import FiitedEmbeddingBagCollection
    from experiments import gpu_store_check as check

    steps, batch, budget = 14, 256, 3 * 2**20
    cpu = torch.device("cpu")
    store = check.make_store(check.make_config(steps), budget, cpu)
    features = [f"f{i}" for i in range(len(check.FEATURE_TABLE))]
    tables = [EmbeddingBagConfig(name=name, embedding_dim=dim, num_embeddings=rows,
                                 feature_names=[f for f, t in zip(features, check.FEATURE_TABLE) if t == i])
              for i, (name, rows, dim) in enumerate(zip(check.NAMES, check.ROWS, check.DIMS))]
    module = FiitedEmbeddingBagCollection(tables, memory_budget=budget, config=check.make_config(steps), device=cpu)
    module.train()
    layout = check.feature_layout(cpu)
    resizes = 0
    for b in check.make_batches(steps, batch, seed=3):
        resizes += check.train_step(store, b, layout, batch) is not None
        kjt = KeyedJaggedTensor(keys=features, values=b["values"], lengths=b["lengths"].reshape(-1))
        module(kjt).values().backward(b["grad"])
    assert resizes >= 2 and len(module.telemetry) == resizes
    problems = check.compare("module vs train_step", check.dense_view(store), check.dense_view(module.store), tol=1e-7)
    assert not problems, problems
    assert store.counter_dict()["pruned_chunks"] > 0


def test_store_check_runs_on_cpu(tmp_path):
    result = run_script(["experiments/gpu_store_check.py", "--device", "cpu", "--steps", "24", "--batch", "512"], tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "0 mismatches -> PASS" in result.stdout and "MATCH" in result.stdout


def test_device_scripts_need_no_torchrec(tmp_path):
    """The GPU machines have no TorchRec: everything the device scripts import and run must work without it."""
    code = (
        "import sys; sys.modules['torchrec'] = None\n"  # any `import torchrec...` now raises ImportError
        "import torch, cuda_ext._C\n"
        "from experiments import bench_gpu, gpu_store_check\n"
        "store = gpu_store_check.make_store(gpu_store_check.make_config(6), 2**21, torch.device('cpu'))\n"
        "import emb_opt.resize, semantic_id.parameterizations, hashing.random_hash\n"
        "print('NO_TORCHREC_OK')\n"
    )
    result = run_script(["-c", code], tmp_path)
    assert result.returncode == 0 and "NO_TORCHREC_OK" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
