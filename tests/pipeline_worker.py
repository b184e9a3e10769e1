"""Worker of tests/test_fiited_pipeline.py, run as ``torchrun --nproc_per_node 2 tests/pipeline_worker.py OUT``.

Trains the same DLRM over FIITED tables (table-wise sharded with ``FiitedEmbeddingBagCollectionSharder``
under DistributedModelParallel, CPU, gloo) twice on the same batches: with the plain loop (forward, backward,
optimizer step) and with TorchRec's ``TrainPipelineSparseDist``. Rank 0 writes to OUT/pipeline.json the losses
of both (per step, the sum over ranks of each rank's mean loss), which modules the pipeline pipelined, what ran
their input dists, the resizes of rank 0's store, whether every rank's stores ended bit-identical, and how
``emb_opt.export_inference`` refuses the sharded model.
"""
import json
import os
import sys
from typing import Iterator, List

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torchrec import EmbeddingBagConfig  # noqa: E402
from torchrec.datasets.utils import Batch  # noqa: E402
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist  # noqa: E402
from torchrec.models.dlrm import DLRM, DLRMTrain  # noqa: E402

import emb_opt  # noqa: E402
from emb_opt.sharding import FiitedEmbeddingBagCollectionSharder, ShardedFiitedEmbeddingBagCollection  # noqa: E402
from tests.sharded_dlrm_model import DIM, ROWS, TABLE_NAMES, batch, table_wise_dmp  # noqa: E402

STEPS = 6
DENSE_LR = 0.05


def build_model() -> DLRMTrain:
    torch.manual_seed(0)
    tables = [EmbeddingBagConfig(name=name, embedding_dim=DIM, num_embeddings=rows, feature_names=[f"f{i}"])
              for i, (name, rows) in enumerate(zip(TABLE_NAMES, ROWS))]
    # a small budget and early resizes, so that admission, denials and resizes happen within the run
    ebc = emb_opt.FiitedEmbeddingBagCollection(tables, 0.6, chunk_size=4, learning_rate=0.05, warmup_steps=2,
                                               resize_interval=2)
    return DLRMTrain(DLRM(embedding_bag_collection=ebc, dense_in_features=3, dense_arch_layer_sizes=[8, DIM],
                          over_arch_layer_sizes=[8, 1]))


def make_dmp(pg: dist.ProcessGroup, plan=None):
    return table_wise_dmp(build_model(), pg, [FiitedEmbeddingBagCollectionSharder()], plan)


def batches(rank: int, world: int) -> Iterator[Batch]:
    for step in range(STEPS):
        dense, kjt, labels = batch(step, rank, world)
        yield Batch(dense_features=dense, sparse_features=kjt, labels=labels)


def summed(loss: torch.Tensor) -> float:
    total = loss.detach().clone()
    dist.all_reduce(total)
    return float(total)


def store_buffers(model) -> List[torch.Tensor]:
    return [b for m in model.modules() if isinstance(m, ShardedFiitedEmbeddingBagCollection) and m._has_local
            for b in m.local.store.buffers()]


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    pg = dist.group.WORLD
    plain, plan = make_dmp(pg)
    optimizer = torch.optim.SGD(plain.parameters(), lr=DENSE_LR)
    plain_losses = []
    for b in batches(rank, world):
        loss, _ = plain(b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        plain_losses.append(summed(loss))

    piped, _ = make_dmp(pg, plan)
    optimizer = torch.optim.SGD(piped.parameters(), lr=DENSE_LR)
    pipeline = TrainPipelineSparseDist(piped, optimizer, torch.device("cpu"), execute_all_batches=True)
    pipeline_losses = []
    iterator = batches(rank, world)
    while True:
        try:
            loss = pipeline.progress(iterator)[0]  # the model's second output: DLRMTrain's (loss, logits, labels)
        except StopIteration:
            break
        pipeline_losses.append(summed(loss))
    pipelined = [type(m).__name__ for m in piped.modules() if getattr(m, "is_pipelined", False)]
    # the pipeline runs the input dists' splits all-to-all fused (its KJTAllToAllForward in place of KJTAllToAll's)
    input_dist_forwards = [type(d._dist.forward).__name__ for m in piped.modules()
                           if isinstance(m, ShardedFiitedEmbeddingBagCollection) for d in m._input_dists]
    mine, theirs = store_buffers(plain), store_buffers(piped)
    same = len(mine) == len(theirs) > 0 and all(torch.equal(a, b) for a, b in zip(mine, theirs))
    flags = [None] * world
    dist.all_gather_object(flags, same)
    resizes = [len(m.local.telemetry) for m in piped.modules()
               if isinstance(m, ShardedFiitedEmbeddingBagCollection) and m._has_local]
    try:  # an inference export needs the unsharded model
        emb_opt.export_inference(piped)
        refused = ""
    except ValueError as error:
        refused = str(error)
    if rank == 0:
        with open(os.path.join(out, "pipeline.json"), "w") as handle:
            json.dump({"plain": plain_losses, "pipeline": pipeline_losses, "pipelined": pipelined,
                       "stores_equal": flags, "resizes": resizes,
                       "input_dist_forwards": input_dist_forwards, "export_refused": refused}, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
