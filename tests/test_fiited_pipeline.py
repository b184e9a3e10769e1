"""FIITED on TorchRec users' paths: ``torchrec.fx.symbolic_trace`` (the traced model trains exactly as the eager
one), ``TrainPipelineSparseDist`` (unsharded on CPU, and over DistributedModelParallel with 2 gloo ranks: losses
equal the plain loop's), and the inference export (``emb_opt.export_inference``: eval outputs bit for bit, fx
trace, ``torch.export``, memory report, versioned state_dict that refuses training checkpoints)."""
import json
import os
import subprocess
import sys
import warnings
from typing import Iterator, List

import pytest
import torch
import torchrec
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.datasets.utils import Batch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.models.dlrm import DLRM, DLRMTrain
from torchrec.modules.embedding_configs import PoolingType

import emb_opt
from emb_opt.fiited_ebc import fiited_pooled_embeddings
from emb_opt.inference import FiitedInferenceCollection
from tests.fiited_helpers import random_kjt, small_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIITED_OPTIONS = dict(chunk_size=4, learning_rate=0.05, warmup_steps=2, resize_interval=2)


def mixed_pooling_tables() -> List[EmbeddingBagConfig]:
    tables = small_tables(dim=8)
    tables[1].pooling = PoolingType.MEAN  # t0 SUM (f0, f2), t1 MEAN (f1): the mean factors run after the lookup
    return tables


def build_dlrm(kind: str = "fiited", budget: float = 0.5, weighted: bool = False) -> DLRM:
    """A small DLRM whose budget denies admissions and prunes chunks within a few steps, both tables keeping rows."""
    torch.manual_seed(0)
    if kind == "rowprune":
        ebc = emb_opt.RowPruningEmbeddingBagCollection(small_tables(dim=8), budget, learning_rate=0.05,
                                                       warmup_steps=2, resize_interval=2)
    else:
        tables = small_tables(dim=8) if weighted else mixed_pooling_tables()
        ebc = emb_opt.FiitedEmbeddingBagCollection(tables, budget, is_weighted=weighted, **FIITED_OPTIONS)
    return DLRM(embedding_bag_collection=ebc, dense_in_features=3, dense_arch_layer_sizes=[8],
                over_arch_layer_sizes=[4, 1])


def dense_input(step: int, batch_size: int = 6) -> torch.Tensor:
    return torch.randn(batch_size, 3, generator=torch.Generator().manual_seed(1000 + step))


def train(model, steps: int, weighted: bool = False) -> List[float]:
    """A few training steps with resizes (warm-up 2, every 2 steps); the losses."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the small budget denies admissions (warned once)
        for step in range(steps):
            loss = model(dense_input(step), random_kjt(step, weighted=weighted)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def fiited_of(model) -> emb_opt.FiitedEmbeddingBagCollection:
    return model.sparse_arch.embedding_bag_collection


# ---- torchrec.fx.symbolic_trace ------------------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True])
def test_symbolic_trace_of_a_dlrm_with_fiited_trains_as_the_eager_model(weighted):
    eager, traced_root = build_dlrm(weighted=weighted), build_dlrm(weighted=weighted)
    traced = torchrec.fx.symbolic_trace(traced_root)
    steps = [n for n in traced.graph.nodes if n.op == "call_function" and n.target is fiited_pooled_embeddings]
    assert len(steps) == 1  # the whole step is one leaf call taking the collection and the KJT
    assert train(traced, 8, weighted) == train(eager, 8, weighted)  # bit for bit
    for (name, p), q in zip(eager.named_parameters(), traced_root.parameters()):
        assert torch.equal(p, q), name
    a, b = fiited_of(eager), fiited_of(traced_root)
    assert len(a.telemetry) == len(b.telemetry) >= 3  # resizes ran from the traced graph
    assert a.store.counter_dict() == b.store.counter_dict()
    for t in ("t0", "t1"):
        assert torch.equal(a.to_dense_weights(t), b.to_dense_weights(t))


# ---- TrainPipelineSparseDist ---------------------------------------------------------------------------------
def pipeline_batches(steps: int) -> Iterator[Batch]:
    for step in range(steps):
        labels = (torch.rand(6, generator=torch.Generator().manual_seed(step)) < 0.5).float()
        yield Batch(dense_features=dense_input(step), sparse_features=random_kjt(step), labels=labels)


def test_train_pipeline_sparse_dist_unsharded_on_cpu_trains_as_the_plain_loop():
    # with no sharded module the pipeline traces the model (torchrec's pipeline tracer), pipelines nothing and
    # runs forward, backward and the optimizer step on batches it fetched ahead
    plain, piped = DLRMTrain(build_dlrm()), DLRMTrain(build_dlrm())
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.1)
    plain_losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for batch in pipeline_batches(8):
            loss, _ = plain(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            plain_losses.append(loss.item())
        pipeline = TrainPipelineSparseDist(piped, torch.optim.SGD(piped.parameters(), lr=0.1), torch.device("cpu"))
        iterator, pipeline_losses = pipeline_batches(8), []
        while True:
            try:
                pipeline_losses.append(pipeline.progress(iterator)[0].item())
            except StopIteration:
                break
    assert pipeline_losses == plain_losses
    a, b = plain.model.sparse_arch.embedding_bag_collection, piped.model.sparse_arch.embedding_bag_collection
    assert len(a.telemetry) == len(b.telemetry) >= 3
    for t in ("t0", "t1"):
        assert torch.equal(a.to_dense_weights(t), b.to_dense_weights(t))


@pytest.mark.distributed
def test_train_pipeline_sparse_dist_over_dmp_matches_the_plain_dmp_loop(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    result = subprocess.run(torchrun + [os.path.join(ROOT, "tests", "pipeline_worker.py"), str(tmp_path)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    run = json.loads((tmp_path / "pipeline.json").read_text())
    assert run["pipelined"] == ["ShardedFiitedEmbeddingBagCollection"]  # its input dist ran a batch ahead
    assert run["input_dist_forwards"] == ["KJTAllToAllForward"]  # with the pipeline's fused splits all-to-all
    assert len(run["plain"]) == 6 and run["pipeline"] == run["plain"]  # bit for bit
    assert run["stores_equal"] == [True, True] and run["resizes"][0] >= 2
    assert "export_inference takes an unsharded model" in run["export_refused"]


# ---- inference export ----------------------------------------------------------------------------------------
def report_total(obj) -> int:
    report = emb_opt.memory_report(obj)
    return int(report[report["table"] == "TOTAL"]["total_bytes"].sum())


@pytest.mark.parametrize("kind,weighted", [("fiited", False), ("fiited", True), ("rowprune", False)])
def test_export_inference_outputs_equal_the_trained_model_in_eval(kind, weighted):
    model = build_dlrm(kind, weighted=weighted)
    train(model, 9, weighted)
    trained = fiited_of(model)
    assert len(trained.telemetry) >= 3 and trained.store.counter_dict()["pruned_chunks"] > 0
    assert all(bool(trained.to_dense_weights(t).any()) for t in ("t0", "t1"))  # both tables read live chunks
    before = {k: v.clone() for k, v in trained.state_dict().items() if isinstance(v, torch.Tensor)}
    served = emb_opt.export_inference(model)
    inference = fiited_of(served)
    assert isinstance(inference, FiitedInferenceCollection) and not served.training
    assert model.training  # the trained model is not changed: mode, store
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in before.items())
    # only what a lookup reads: the live chunks (trimmed to them), the row index, table metadata
    assert set(inference.state_dict()) == {"_extra_state", "store._extra_state", "store.table_rows",
                                           "store.table_chunks", "store.pool_weights", "store.pool_scale",
                                           "store.entry_keys",
                                           "store.entry_first", "store.entry_chunks", "store.hash_buckets"}
    assert inference.store.pool_weights.shape[0] == inference.store.num_live == trained.store.num_live
    model.eval()
    traced = torchrec.fx.symbolic_trace(served)
    for step in range(100, 104):
        dense, kjt = dense_input(step), random_kjt(step, weighted=weighted)
        expected = model(dense, kjt)
        assert torch.equal(served(dense, kjt), expected)
        assert torch.equal(traced(dense, kjt), expected)
    served.train()  # read-only in train mode too
    assert torch.equal(served(dense, kjt), expected)
    report = emb_opt.memory_report(served)
    assert set(report["kind"]) == {"fiited_inference"} and set(report["optimizer"]) == {"none"}
    assert report_total(served) == inference.memory_bytes() < report_total(model)
    assert report_total(served.state_dict()) == report_total(served)
    half = served.half()  # as the trained collection: the chunks stay float32, the output is cast
    assert inference.store.pool_weights.dtype == torch.float32
    assert torch.equal(half.sparse_arch(kjt), model.half().sparse_arch(kjt))


def test_export_state_dict_loads_into_a_fresh_export_and_refuses_a_training_checkpoint():
    model = build_dlrm()
    train(model, 9)
    served = emb_opt.export_inference(model)
    checkpoint = served.state_dict()
    fresh = emb_opt.export_inference(build_dlrm())  # an untrained model: nothing stored
    assert fiited_of(fresh).store.num_live == 0
    dense, kjt = dense_input(7), random_kjt(7)
    expected = served(dense, kjt)
    fresh.load_state_dict(checkpoint)
    assert torch.equal(fresh(dense, kjt), expected)
    # a training checkpoint is refused by name, and the export keeps its state
    with pytest.raises(RuntimeError, match="training checkpoint of a FIITED store.*export_inference"):
        fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(dense, kjt), expected)
    # and the other way round: an export does not load into a training model, which keeps its state
    model.eval()
    before = model(dense, kjt)
    with pytest.raises(RuntimeError, match="the checkpoint is an inference export"):
        model.load_state_dict(checkpoint)
    assert torch.equal(model(dense, kjt), before)
    prefix = "sparse_arch.embedding_bag_collection.store."
    damaged = [
        ({prefix + "_extra_state": dict(checkpoint[prefix + "_extra_state"], layout_version=2)}, "layout_version 2"),
        ({prefix + "_extra_state": dict(checkpoint[prefix + "_extra_state"], chunk_size=8)}, "chunk_size 8"),
        ({prefix + "entry_first": checkpoint[prefix + "entry_first"] + 1}, "end to end"),
        ({prefix + "hash_buckets": torch.full_like(checkpoint[prefix + "hash_buckets"], -1)}, "exactly one bucket"),
        ({prefix + "pool_weights": checkpoint[prefix + "pool_weights"][:-1]}, "slots, but the entries hold"),
        ({prefix + "table_rows": checkpoint[prefix + "table_rows"] + 1}, "differ from this module's"),
    ]
    for change, message in damaged:
        with pytest.raises(RuntimeError, match=message):
            fresh.load_state_dict(dict(checkpoint, **change))
        assert torch.equal(fresh(dense, kjt), expected)
    missing = {k: v for k, v in checkpoint.items() if k != prefix + "entry_keys"}
    with pytest.raises(RuntimeError, match="loads whole or not at all"):
        fresh.load_state_dict(missing, strict=False)


def test_torch_export_of_the_inference_model_gives_its_outputs():
    model = build_dlrm()
    train(model, 9)
    served = emb_opt.export_inference(model)
    batch, nnz = torch.export.Dim("batch", min=2, max=1024), torch.export.Dim("nnz", min=2, max=10**5)
    kjt = random_kjt(1)
    # the KJT flattens to values, weights, lengths, offsets, stride_per_key_per_rank, inverse indices
    shapes = {"dense_features": {0: batch}, "sparse_features": [{0: nnz}, None, {0: 3 * batch}, None, None, None]}
    program = torch.export.export(served, (dense_input(1), kjt), dynamic_shapes=shapes)
    exported = program.module()
    model.eval()
    for step, size in ((20, 6), (21, 9), (22, 4)):
        dense, kjt = dense_input(step, size), random_kjt(step, batch_size=size)
        assert torch.equal(exported(dense, kjt), model(dense, kjt))
    bad = KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f2", "f1"], values=torch.tensor([3, 99, 1]),
                                              lengths=torch.tensor([1, 0, 1, 0, 1, 0]))
    with pytest.raises(Exception, match="id 99 of sample 0 is out of range"):
        exported(dense_input(0, 2), bad)


def test_export_inference_needs_a_fiited_collection_and_takes_one_itself():
    with pytest.raises(ValueError, match="no FiitedEmbeddingBagCollection"):
        emb_opt.export_inference(torch.nn.Linear(2, 2))
    ebc = emb_opt.FiitedEmbeddingBagCollection(small_tables(dim=8), 0.5, **FIITED_OPTIONS)
    served = emb_opt.export_inference(ebc)  # the collection itself
    assert isinstance(served, FiitedInferenceCollection)
    assert torch.equal(served(random_kjt(3)).values(), ebc.eval()(random_kjt(3)).values())
