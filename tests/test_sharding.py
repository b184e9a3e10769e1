"""FIITED under TorchRec DistributedModelParallel (2 CPU ranks, gloo, table-wise): the sharded run matches a
single-process run on the same data, a rank-local checkpoint replays bit for bit, and the planner sees the
budget, not rows x dim."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.sharded_dlrm_model import CHECKPOINT_STEP, DENSE_LR, LOCAL_BATCH, STEPS, batch, build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.distributed


def single_process_losses():
    """The 2-rank run's loss (sum over ranks of each rank's mean) computed in one process."""
    model = build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=DENSE_LR / 2)  # DDP averages dense grads over 2 ranks
    losses = []
    for step in range(STEPS):
        dense, kjt, labels = batch(step, 0, 1)  # the whole global batch in one step, as the ranks see it
        logits = model(dense, kjt).squeeze(1)
        halves = [slice(r * LOCAL_BATCH, (r + 1) * LOCAL_BATCH) for r in range(2)]
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(logits[h], labels[h]) for h in halves)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    result = subprocess.run(torchrun + [os.path.join(ROOT, "tests", "sharded_dlrm_worker.py"), str(out)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return out


def test_sharded_losses_match_single_process(sharded_run):
    sharded = json.loads((sharded_run / "losses.json").read_text())
    single = single_process_losses()
    assert len(sharded) == len(single) == STEPS
    for step, (a, b) in enumerate(zip(sharded, single)):
        assert abs(a - b) <= 1e-4 * abs(b), f"step {step}: sharded {a} vs single-process {b}"
    assert single[-1] < single[0]  # it trains


def test_sharded_checkpoint_replays_exactly(sharded_run):
    sharded = json.loads((sharded_run / "losses.json").read_text())
    replay = json.loads((sharded_run / "replay.json").read_text())
    assert replay == sharded[CHECKPOINT_STEP:]


def test_memory_report_of_the_sharded_model_gathers_every_rank(sharded_run):
    import pandas as pd

    report = pd.read_csv(sharded_run / "report.csv")
    rank_bytes = json.loads((sharded_run / "rank_bytes.json").read_text())
    tables = report[~report["table"].isin(["(shared)", "TOTAL"])]
    assert sorted(tables["table"]) == ["t0", "t1", "t2", "t3"]  # every table once, on the rank that holds it
    assert {m.rsplit("[", 1)[1] for m in tables["module"]} == {"rank 0]", "rank 1]"}
    overall = report[(report["module"] == "(all)") & (report["table"] == "TOTAL")]
    assert int(overall["total_bytes"].iloc[0]) == sum(rank_bytes)


def test_plan_puts_fiited_tables_table_wise(sharded_run):
    plan = (sharded_run / "plan.txt").read_text()
    for table in ("t0", "t1", "t2", "t3"):
        assert table in plan
    assert "table_wise" in plan


def test_planner_sees_the_budget_not_rows_times_dim():
    from emb_opt.sharding import FiitedEmbeddingBagCollectionSharder, table_budget_shares
    from torchrec import EmbeddingBagConfig

    import emb_opt

    tables = [EmbeddingBagConfig(name=f"t{i}", embedding_dim=64, num_embeddings=10**8, feature_names=[f"f{i}"]) for i in range(2)]
    module = emb_opt.FiitedEmbeddingBagCollection(tables, 2**28, chunk_size=16)  # 256 MiB for two 25.6 GB tables
    params = FiitedEmbeddingBagCollectionSharder().shardable_parameters(module)
    shares = table_budget_shares(module)
    for name, tensor in params.items():
        assert tensor.device.type == "meta"
        nbytes = tensor.numel() * tensor.element_size()
        assert shares[name] <= nbytes < shares[name] + 4 * 64  # the budget share, rounded up to a row
        assert nbytes < 10**8 * 64 * 4 / 50
