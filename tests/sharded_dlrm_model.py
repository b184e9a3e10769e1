"""The model and data shared by the sharded runs (tests/sharded_dlrm_worker.py, tests/pipeline_worker.py) and
the single-process reference (tests/test_sharding.py): a DLRM over four FIITED tables, one of them read through a
semantic-ID prefix-ngram transform, and the table-wise DistributedModelParallel wrapping of a model."""
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import ShardingEnv, ShardingPlan
from torchrec.models.dlrm import DLRM

import emb_opt
from semantic_id import SemanticIdEmbeddingBagCollection

STEPS = 20
CHECKPOINT_STEP = 10
LOCAL_BATCH = 16
DENSE_LR = 0.05  # per-rank SGD; the single-process reference uses DENSE_LR / world (DDP averages dense grads)
DIM = 8
ROWS = [60, 40, 30, 25]
TABLE_NAMES = [f"t{i}" for i in range(4)]
NUM_ITEMS = 50


def build_model() -> DLRM:
    torch.manual_seed(0)
    tables = [EmbeddingBagConfig(name=name, embedding_dim=DIM, num_embeddings=rows, feature_names=[f"f{i}"])
              for i, (name, rows) in enumerate(zip(TABLE_NAMES, ROWS))]
    codes = torch.randint(0, 4, (NUM_ITEMS, 3), generator=torch.Generator().manual_seed(1))
    # feature f0 holds item ids (< NUM_ITEMS) turned into prefix-ngram tokens of table t0
    collection = SemanticIdEmbeddingBagCollection.from_tables(
        tables, {"t0": codes}, parameterization="prefix_ngram", num_buckets=ROWS[0],
        ebc_cls=emb_opt.FiitedEmbeddingBagCollection,
        ebc_kwargs=dict(memory_budget=10**6, chunk_size=4, learning_rate=0.05, warmup_steps=10**6),
        codebook_size=4,
    )
    return DLRM(embedding_bag_collection=collection, dense_in_features=3, dense_arch_layer_sizes=[8, DIM],
                over_arch_layer_sizes=[8, 1])


def batch(step: int, rank: int, world: int) -> Tuple[torch.Tensor, KeyedJaggedTensor, torch.Tensor]:
    """Rank ``rank``'s share of global batch ``step`` (``world`` = 1: the whole batch, rank must be 0)."""
    gen = torch.Generator().manual_seed(1000 + step)
    total = LOCAL_BATCH * 2  # the global batch of the 2-rank run
    dense = torch.randn(total, 3, generator=gen)
    labels = (torch.rand(total, generator=gen) < 0.3).float()
    limits = [NUM_ITEMS, ROWS[1], ROWS[2], ROWS[3]]
    lengths = torch.randint(1, 3, (4, total), generator=gen)
    values = [(torch.rand(int(lengths[f].sum()), generator=gen) ** 2 * limits[f]).long() for f in range(4)]
    if world == 1:
        rows = slice(0, total)
    else:
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    picked_values, picked_lengths = [], []
    for f in range(4):
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths[f], 0)])
        start, stop = int(offsets[rows.start]), int(offsets[rows.stop])
        picked_values.append(values[f][start:stop])
        picked_lengths.append(lengths[f][rows])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f1", "f2", "f3"], values=torch.cat(picked_values),
                                              lengths=torch.cat(picked_lengths))
    return dense[rows], kjt, labels[rows]


def rank_loss(model, dense, kjt, labels) -> torch.Tensor:
    logits = model(dense, kjt).squeeze(1)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)


def table_wise_dmp(model: torch.nn.Module, pg: dist.ProcessGroup, sharders: List,
                   plan: Optional[ShardingPlan] = None) -> Tuple[DistributedModelParallel, ShardingPlan]:
    """``model`` under DistributedModelParallel on CPU, every table of ``TABLE_NAMES`` sharded table-wise (the
    planner's collective plan, or ``plan`` to reuse one); returns the model and its plan."""
    env = ShardingEnv.from_process_group(pg)
    if plan is None:
        planner = EmbeddingShardingPlanner(
            topology=Topology(world_size=env.world_size, compute_device="cpu"),
            constraints={name: ParameterConstraints(sharding_types=["table_wise"]) for name in TABLE_NAMES},
        )
        plan = planner.collective_plan(model, sharders, pg)
    return DistributedModelParallel(model, env=env, device=torch.device("cpu"), plan=plan, sharders=sharders), plan
