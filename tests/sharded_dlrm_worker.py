"""Worker of tests/test_sharding.py, run as ``torchrun --nproc_per_node 2 tests/sharded_dlrm_worker.py OUT``.

Trains the model of ``build_model`` (a DLRM whose collection is a semantic-ID transform in front of a FIITED
collection, plus a plain FIITED feature set) under TorchRec DistributedModelParallel, table-wise sharded on
CPU with gloo, and writes per step the sum over ranks of the per-rank mean losses to OUT/losses.json; then
reloads the rank-local checkpoint taken at step CHECKPOINT_STEP into a fresh sharded model and writes the
losses of the replayed steps to OUT/replay.json. Rank 0 also writes the plan to OUT/plan.txt.
"""
import copy
import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from emb_opt.sharding import FiitedEmbeddingBagCollectionSharder  # noqa: E402
from tests.sharded_dlrm_model import (  # noqa: E402
    CHECKPOINT_STEP, DENSE_LR, STEPS, batch, build_model, rank_loss, table_wise_dmp,
)


def train_steps(model, optimizer, rank, world, steps):
    losses = []
    for step in steps:
        dense, kjt, labels = batch(step, rank, world)
        loss = rank_loss(model, dense, kjt, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total = loss.detach().clone()
        dist.all_reduce(total)
        losses.append(float(total))
    return losses


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    pg = dist.group.WORLD
    sharders = [FiitedEmbeddingBagCollectionSharder()]
    model, plan = table_wise_dmp(build_model(), pg, sharders)
    if rank == 0:
        with open(os.path.join(out, "plan.txt"), "w") as handle:
            handle.write(str(plan))
    optimizer = torch.optim.SGD(model.parameters(), lr=DENSE_LR)
    losses = train_steps(model, optimizer, rank, world, range(CHECKPOINT_STEP))
    checkpoint = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    losses += train_steps(model, optimizer, rank, world, range(CHECKPOINT_STEP, STEPS))
    # budget invariant on every rank's store
    fiited = [m for m in model.modules() if type(m).__name__ == "ShardedFiitedEmbeddingBagCollection"]
    assert fiited, "no sharded FIITED collection in the model"
    for m in fiited:
        if m._has_local:
            assert m.local.memory_bytes() <= m.local.budget_bytes
    # the memory report: this rank's tables, from the model and from its rank-local checkpoint; all ranks' on rank 0
    import emb_opt

    local = emb_opt.memory_report(model)
    local_bytes = sum(m.local.memory_bytes() for m in fiited if m._has_local)
    assert int(local[local["table"] == "TOTAL"]["total_bytes"].sum()) == local_bytes
    from_checkpoint = emb_opt.memory_report(checkpoint)
    assert sorted(from_checkpoint["table"]) == sorted(local["table"])
    gathered = emb_opt.memory_report(model, gather=True)
    sizes = [0] * world
    dist.all_gather_object(sizes, local_bytes)
    if rank == 0:
        gathered.to_csv(os.path.join(out, "report.csv"), index=False)
        with open(os.path.join(out, "rank_bytes.json"), "w") as handle:
            json.dump(sizes, handle)
    else:
        assert gathered is None
    fresh, _ = table_wise_dmp(build_model(), pg, sharders, plan)
    fresh.load_state_dict(checkpoint)
    optimizer = torch.optim.SGD(fresh.parameters(), lr=DENSE_LR)
    optimizer.load_state_dict(optimizer_state)
    replay = train_steps(fresh, optimizer, rank, world, range(CHECKPOINT_STEP, STEPS))
    if rank == 0:
        with open(os.path.join(out, "losses.json"), "w") as handle:
            json.dump(losses, handle)
        with open(os.path.join(out, "replay.json"), "w") as handle:
            json.dump(replay, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
