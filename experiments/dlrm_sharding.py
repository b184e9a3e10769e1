"""TorchRec DistributedModelParallel on CPU processes for the Criteo comparison: start the processes (one gloo
process group), shard a DLRM table-wise, gather what each rank evaluated.

Tables are sharded table-wise, each onto one rank: FIITED and row pruning by ``emb_opt``'s sharder, dense tables
by TorchRec's ``EmbeddingBagCollectionSharder``, which makes them FBGEMM TBEs with fused row-wise Adagrad. The
functions but ``run_on_ranks`` run inside its processes.
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import warnings
from typing import Any, Callable, List, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torchrec import EmbeddingBagConfig
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import ShardingEnv

from emb_opt import FiitedEmbeddingBagCollection, RowPruningEmbeddingBagCollection, load_checkpoint, save_checkpoint
from emb_opt.sharding import FiitedEmbeddingBagCollectionSharder
from experiments.dlrm_methods import embedding_bytes


def run_on_ranks(nproc: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(rank, world, *args)`` on ``nproc`` CPU processes in one gloo process group; returns rank 0's result."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "result.pt")
        mp.spawn(_rank_main, args=(nproc, port, path, fn, args), nprocs=nproc, join=True)
        return load_checkpoint(path)


def _rank_main(rank: int, world: int, port: int, path: str, fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    logging.getLogger("torchrec").setLevel(logging.ERROR)  # planner advice about GPU topologies, not for CPU runs
    warnings.filterwarnings("ignore", category=UserWarning)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    result = fn(rank, world, *args)
    if rank == 0:
        save_checkpoint(result, path)
    dist.destroy_process_group()


def shard(model: nn.Module, tables: List[EmbeddingBagConfig], learning_rate: float, print_plan: bool) -> nn.Module:
    """``model`` under DistributedModelParallel, every table on one rank (the planner's choice)."""
    fused = {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": learning_rate, "eps": 1e-8}
    sharders = [FiitedEmbeddingBagCollectionSharder(FiitedEmbeddingBagCollection),
                FiitedEmbeddingBagCollectionSharder(RowPruningEmbeddingBagCollection),
                EmbeddingBagCollectionSharder(fused_params=fused)]
    world = dist.get_world_size()
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=world, compute_device="cpu"),
        constraints={t.name: ParameterConstraints(sharding_types=["table_wise"]) for t in tables})
    plan = planner.collective_plan(model, sharders, dist.group.WORLD)
    if print_plan:
        print(f"sharding plan ({world} ranks):\n{plan}", flush=True)
    return DistributedModelParallel(model, env=ShardingEnv.from_process_group(dist.group.WORLD),
                                    device=torch.device("cpu"), plan=plan, sharders=sharders)


def gather(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor, nbytes: int,
           samples: int) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
    """All ranks' logits and labels in rank order, the embedding bytes -- ``nbytes`` if given (dense tables), else
    those of every rank's FIITED shards, on rank 0 -- and all ranks' samples. Every rank must call it."""
    world = dist.get_world_size()
    gathered: List[Tuple[torch.Tensor, torch.Tensor]] = [None] * world  # type: ignore[list-item]
    dist.all_gather_object(gathered, (logits, labels))
    return (torch.cat([g[0] for g in gathered]), torch.cat([g[1] for g in gathered]),
            nbytes or embedding_bytes(model, gather=True), samples * world)
