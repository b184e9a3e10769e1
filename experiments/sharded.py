"""``--nproc N`` for the Criteo comparison: every method trained under TorchRec DistributedModelParallel on N
CPU processes (gloo), tables sharded table-wise -- FIITED and row pruning by ``emb_opt``'s sharder, dense
tables by TorchRec's ``EmbeddingBagCollectionSharder`` with fused row-wise Adagrad.

Each training step reads N consecutive batches of ``batch_size / N`` samples and gives one to each rank (the
global batch is ``batch_size``); evaluation splits the same way and gathers the logits on rank 0. Rank 0 prints
the sharding plan of the first FIITED method and returns the result rows to the parent process.
"""
from __future__ import annotations

import dataclasses
import logging
import itertools
import os
import socket
import tempfile
import warnings
from typing import Dict, Iterator, List, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torchrec.datasets.utils import Batch
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import ShardingEnv

from emb_opt import FiitedEmbeddingBagCollection, RowPruningEmbeddingBagCollection
from emb_opt.sharding import FiitedEmbeddingBagCollectionSharder
from experiments.methods import (
    SID_KINDS, MethodSpec, build_collection, full_bytes, sharded_collection_bytes,
)
from experiments.metrics import ctr_metrics
from experiments.train import build_seeded_dlrm, train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_batches(batches: Iterator[Batch], rank: int, world: int) -> Iterator[Batch]:
    """Every ``world``-th batch starting at ``rank``: this rank's share of each global batch."""
    return itertools.islice(batches, rank, None, world)


def _sharders(learning_rate: float) -> list:
    fused = {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": learning_rate, "eps": 1e-8}
    return [FiitedEmbeddingBagCollectionSharder(FiitedEmbeddingBagCollection),
            FiitedEmbeddingBagCollectionSharder(RowPruningEmbeddingBagCollection),
            EmbeddingBagCollectionSharder(fused_params=fused)]


def _worker(rank: int, world: int, port: int, config, specs: List[MethodSpec], out_path: str) -> None:
    from experiments.criteo_dlrm import DataSource, parse_fiited_options  # the parent's module; imported here for the spawned process

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    logging.getLogger("torchrec").setLevel(logging.ERROR)  # planner advice about GPU topologies, not for CPU runs
    warnings.filterwarnings("ignore", category=UserWarning)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    local = dataclasses.replace(config, batch_size=config.batch_size // world, eval_batch_size=config.eval_batch_size // world,
                                steps=config.steps * world, eval_batches=config.eval_batches * world)
    data = DataSource(local)
    eval_set = list(_rank_batches(iter(data.eval_batches()), rank, world))
    env = ShardingEnv.from_process_group(dist.group.WORLD)
    sharders = _sharders(config.emb_lr)
    rows, plan_printed = [], False
    for spec in specs:
        torch.manual_seed(config.seed)
        tables = data.tables()
        sid = data.semantic_ids() if spec.kind in SID_KINDS else None
        options = dict(warmup_steps=config.warmup_steps, resize_interval=config.resize_interval)
        if spec.kind in ("fiited", "fiited_sid"):
            options.update(parse_fiited_options(config.fiited_options))
        collection = build_collection(spec, tables, config.emb_lr, config.chunk_size, options, sid, for_sharding=True,
                                      init_seed=config.seed)
        model = build_seeded_dlrm(collection, config.embedding_dim, config.seed)
        names = [t.name for t in tables]
        planner = EmbeddingShardingPlanner(
            topology=Topology(world_size=world, compute_device="cpu"),
            constraints={n: ParameterConstraints(sharding_types=["table_wise"]) for n in names},
        )
        plan = planner.collective_plan(model, sharders, dist.group.WORLD)
        model = DistributedModelParallel(model, env=env, device=torch.device("cpu"), plan=plan, sharders=sharders)
        if rank == 0 and spec.kind in ("fiited", "fiited_sid") and not plan_printed:
            print(f"sharding plan of {spec.name} ({world} ranks):\n{plan}", flush=True)
            plan_printed = True
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="FIITED store full")
            result = train(model, _rank_batches(data.train_batches(), rank, world), config.steps, config.dense_lr,
                           desc=spec.name, progress=config.progress and rank == 0)
        model.eval()
        logits, labels = [], []
        with torch.no_grad():
            for batch in eval_set:
                logits.append(model(batch.dense_features, batch.sparse_features).squeeze(1))
                labels.append(batch.labels)
        gathered: List[Tuple[torch.Tensor, torch.Tensor]] = [None] * world  # type: ignore[list-item]
        dist.all_gather_object(gathered, (torch.cat(logits), torch.cat(labels)))
        nbytes = torch.tensor([sharded_collection_bytes(model)], dtype=torch.int64)
        dist.all_reduce(nbytes)
        total_bytes = int(nbytes) or _dense_bytes(spec, tables)
        if rank == 0:
            metrics = ctr_metrics(torch.cat([g[0] for g in gathered]), torch.cat([g[1] for g in gathered]))
            rows.append({
                "method": spec.name, "kind": spec.kind, "budget": spec.budget if spec.budget is not None else 1.0,
                "embedding_bytes": total_bytes, "bytes_fraction": total_bytes / full_bytes(tables),
                **{k: round(v, 5) for k, v in metrics.items()},
                "train_seconds": round(result.seconds, 1), "steps": result.steps, "samples": result.samples * world,
                "final_train_loss": round(result.losses[-1], 5) if result.losses else float("nan"), "nproc": world,
            })
            print(f"  {spec.name:<16} AUC {metrics['auc']:.4f}  logloss {metrics['log_loss']:.4f}  "
                  f"bytes {total_bytes / 2**20:8.2f} MiB  {result.seconds:.0f} s", flush=True)
    if rank == 0:
        torch.save(rows, out_path)
    dist.destroy_process_group()


def _dense_bytes(spec: MethodSpec, tables) -> int:
    from hashing.hashed_ebc import hashed_table_configs

    if spec.kind == "full":
        return full_bytes(tables)
    return full_bytes(hashed_table_configs(tables, total_row_fraction=spec.budget))


def run_sharded(config, specs: List[MethodSpec], nproc: int) -> List[Dict]:
    """Train every method sharded over ``nproc`` processes; returns rank 0's result rows."""
    if config.batch_size % nproc or config.eval_batch_size % nproc:
        raise ValueError(f"--batch-size and --eval-batch-size must be multiples of --nproc {nproc}")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.pt")
        mp.spawn(_worker, args=(nproc, _free_port(), config, specs, out), nprocs=nproc, join=True)
        return torch.load(out, weights_only=False)
