"""TorchRec ``DistributedModelParallel`` support: a sharder that shards ``FiitedEmbeddingBagCollection``
table-wise, like TorchRec's own collections.

    from emb_opt.sharding import FiitedEmbeddingBagCollectionSharder
    sharders = [FiitedEmbeddingBagCollectionSharder(), EmbeddingBagCollectionSharder()]
    plan = EmbeddingShardingPlanner(topology, constraints=...).collective_plan(model, sharders, pg)
    model = DistributedModelParallel(model, env=ShardingEnv.from_process_group(pg), plan=plan, sharders=sharders)

How it shards (``ShardedFiitedEmbeddingBagCollection``):
* every table goes whole to one rank (``table_wise``); each rank builds a FIITED collection of its own tables
  -- its own VHPI store, resized independently -- with the tables' share of the budget (each table's share is
  proportional to its full-table bytes);
* input dist: TorchRec's table-wise ``TwSparseFeaturesDist`` (a ``KJTAllToAll``) sends each feature's ids to
  the rank owning its table, as a ``KJTListSplitsAwaitable`` of one KJT -- what ``ShardedEmbeddingBagCollection``
  returns, so ``TrainPipelineSparseDist`` runs it a batch ahead and fuses its splits all-to-all with the other
  sharded modules'; compute: the rank's FIITED lookup over the global batch (a ``KJTList`` of that KJT);
  output dist: ``PooledEmbeddingsAllToAll`` sends the pooled embeddings back (it carries the gradients in
  backward, where the fused optimizer runs). As with TorchRec's sharded collections, embedding gradients are
  summed over ranks while DDP averages the dense ones;
* the planner sees honest sizes: ``shardable_parameters`` gives each table as a meta tensor of
  ``[ceil(share / (4 * dim)), dim]`` floats -- the table's budget share, not rows x dim;
* ``state_dict`` holds the rank's store under the unsharded names (``store.*``); a sharded checkpoint is one
  file per rank and reloads into the same plan (moving tables to other ranks needs a fresh import).
Semantic-ID transforms need nothing: placed in front of a collection, they run on each rank's local batch
before the input dist, and the collection behind them shards as usual.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Optional, Type

import torch
from torch import nn
from torchrec.distributed.dist_data import PooledEmbeddingsAllToAll
from torchrec.distributed.embedding_sharding import KJTListSplitsAwaitable
from torchrec.distributed.embedding_types import EmbeddingComputeKernel, KJTList
from torchrec.distributed.sharding.tw_sharding import TwSparseFeaturesDist
from torchrec.distributed.types import (
    Awaitable,
    LazyAwaitable,
    ModuleSharder,
    NullShardedModuleContext,
    ParameterSharding,
    ShardedModule,
    ShardingEnv,
    ShardingType,
)
from torchrec.modules.embedding_modules import get_embedding_names_by_table
from torchrec.optim.fused import FusedOptimizer, FusedOptimizerModule
from torchrec.optim.keyed import KeyedOptimizer
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from emb_opt.budget import full_table_bytes
from emb_opt.config import merge_config
from emb_opt.declared_optimizer import optimizer_from_fused_params
from emb_opt.fiited_ebc import FiitedEmbeddingBagCollection


def table_budget_shares(module: FiitedEmbeddingBagCollection) -> Dict[str, int]:
    """Each table's share of the collection's budget, proportional to its full-table bytes."""
    fulls = {t.name: full_table_bytes(t.num_embeddings, t.embedding_dim, module.config.optimizer)
             for t in module.embedding_bag_configs()}
    total = sum(fulls.values())
    return {name: int(module.budget_bytes * full / total) for name, full in fulls.items()}


class FiitedFusedOptimizer(FusedOptimizer):
    """The fused optimizer handle DMP collects: updates happen in backward, so ``step`` only applies the
    learning rate set in ``param_groups[0]["lr"]`` (e.g. by a scheduler) to the FIITED collection."""

    def __init__(self, module: FiitedEmbeddingBagCollection) -> None:
        self._module = module
        super().__init__({}, {}, [{"params": [], "lr": module.config.learning_rate}])

    def step(self, closure: Any = None) -> None:
        lr = float(list(self.param_groups)[0]["lr"])
        if lr != self._module.config.learning_rate:
            self._module.set_learning_rate(lr)

    def zero_grad(self, set_to_none: bool = False) -> None:
        pass


class _PooledAwaitable(LazyAwaitable[KeyedTensor]):
    """Waits for the pooled all-to-all and puts the columns back in the collection's feature order."""

    def __init__(self, awaitable: Awaitable[torch.Tensor], order: torch.Tensor, keys: List[str], dims: List[int]) -> None:
        super().__init__()
        self._awaitable, self._order, self._keys, self._dims = awaitable, order, keys, dims

    def _wait_impl(self) -> KeyedTensor:
        values = self._awaitable.wait().index_select(1, self._order)
        return KeyedTensor(keys=self._keys, length_per_key=self._dims, values=values)


class ShardedFiitedEmbeddingBagCollection(
    ShardedModule[KJTList, torch.Tensor, KeyedTensor, NullShardedModuleContext], FusedOptimizerModule
):
    """Table-wise sharded FIITED collection (see the module docstring)."""

    def __init__(self, module: FiitedEmbeddingBagCollection, params: Dict[str, ParameterSharding],
                 env: ShardingEnv, device: Optional[torch.device] = None,
                 fused_params: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self._env = env
        world, rank = env.world_size, env.rank
        tables = module.embedding_bag_configs()
        owner: Dict[str, int] = {}
        for table in tables:
            sharding = params.get(table.name)
            if sharding is None:
                raise ValueError(f"the sharding plan has no entry for FIITED table {table.name!r}")
            if sharding.sharding_type != ShardingType.TABLE_WISE.value or not sharding.ranks or len(sharding.ranks) != 1:
                raise ValueError(f"FIITED table {table.name!r}: only table_wise sharding onto one rank is supported, "
                                 f"got {sharding.sharding_type} on ranks {sharding.ranks}")
            owner[table.name] = sharding.ranks[0]
        names = get_embedding_names_by_table(tables)
        per_rank = [[i for i, t in enumerate(tables) if owner[t.name] == r] for r in range(world)]
        features_per_rank = [[f for i in idx for f in tables[i].feature_names] for idx in per_rank]
        dims_per_rank = [[tables[i].embedding_dim for i in idx for _ in tables[i].feature_names] for idx in per_rank]
        names_in_rank_order = [n for idx in per_rank for i in idx for n in names[i]]
        self._embedding_names = [n for table_names in names for n in table_names]
        self._dims = [t.embedding_dim for t in tables for _ in t.feature_names]
        self.register_buffer("_column_order", _column_order(self._embedding_names, self._dims, names_in_rank_order,
                                                            [d for dims in dims_per_rank for d in dims]), persistent=False)
        self._input_features = [f for fs in features_per_rank for f in fs]
        shares = table_budget_shares(module)
        mine = [tables[i] for i in per_rank[rank]]
        self._has_local = bool(mine)
        if mine:
            config = copy.deepcopy(module.config)
            if fused_params and not module.optimizer_chosen:  # the sharder's fused_params, as for TorchRec's EBCs
                config = merge_config(config, **optimizer_from_fused_params(fused_params))
            local = FiitedEmbeddingBagCollection(mine, sum(shares[t.name] for t in mine), config=config,
                                                 is_weighted=module.is_weighted(), device=device)
            self.store = local.store  # state_dict keys as in the unsharded module: store.*
            object.__setattr__(self, "_local_module", local)  # not a child module: its store is registered above
        # one table-wise input dist, as TorchRec's sharded collections keep them (the pipeline fuses their splits)
        self._input_dists = nn.ModuleList([TwSparseFeaturesDist(env.process_group, [len(f) for f in features_per_rank])])
        self._emb_dist = PooledEmbeddingsAllToAll(env.process_group, [sum(d) for d in dims_per_rank], device=device)
        self._fused = FiitedFusedOptimizer(self.local) if self._has_local else None
        self._batch_width = sum(dims_per_rank[rank])

    @property
    def unsharded_module_type(self) -> Type[FiitedEmbeddingBagCollection]:
        return FiitedEmbeddingBagCollection

    @property
    def local(self) -> FiitedEmbeddingBagCollection:
        """This rank's FIITED collection (its tables, its store)."""
        return self.__dict__["_local_module"]

    @property
    def fused_optimizer(self) -> KeyedOptimizer:
        from torchrec.optim.fused import EmptyFusedOptimizer

        return self._fused if self._fused is not None else EmptyFusedOptimizer()

    def create_context(self) -> NullShardedModuleContext:
        return NullShardedModuleContext()

    def input_dist(self, ctx: NullShardedModuleContext, features: KeyedJaggedTensor) -> Awaitable[Awaitable[KJTList]]:
        """Starts sending each feature's ids to the rank owning its table (features in the sharded order first)."""
        if features.keys() != self._input_features:
            index = {k: i for i, k in enumerate(features.keys())}
            missing = [f for f in self._input_features if f not in index]
            if missing:
                raise ValueError(f"the KeyedJaggedTensor lacks feature(s) {missing}; it has {features.keys()}")
            features = features.permute([index[f] for f in self._input_features])
        return KJTListSplitsAwaitable([dist(features) for dist in self._input_dists], ctx)

    def compute(self, ctx: NullShardedModuleContext, dist_input: KJTList) -> torch.Tensor:
        """This rank's pooled lookup ``[global batch, width of its features]`` of the KJT its input dist brought."""
        (features,) = dist_input
        if not self._has_local:
            return torch.zeros(features.stride(), 0, requires_grad=True)
        local = self.local
        local.train(self.training)
        return local(features).values()

    def output_dist(self, ctx: NullShardedModuleContext, output: torch.Tensor) -> LazyAwaitable[KeyedTensor]:
        return _PooledAwaitable(self._emb_dist(output), self._column_order, self._embedding_names, self._dims)

    # state carried by checkpoints, as in the unsharded module
    def get_extra_state(self) -> Dict[str, Any]:
        return self.local.get_extra_state() if self._has_local else {}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        if self._has_local:
            self.local.set_extra_state(state)


def _column_order(names: List[str], dims: List[int], rank_names: List[str], rank_dims: List[int]) -> torch.Tensor:
    """Column index into the rank-ordered pooled output for every column of the original feature order."""
    starts, position = {}, 0
    for name, dim in zip(rank_names, rank_dims):
        starts[name] = position
        position += dim
    return torch.cat([torch.arange(starts[n], starts[n] + d) for n, d in zip(names, dims)])


class FiitedEmbeddingBagCollectionSharder(ModuleSharder[FiitedEmbeddingBagCollection]):
    """Shards ``FiitedEmbeddingBagCollection`` (and ``RowPruningEmbeddingBagCollection``) table-wise.

    Args:
        module_type: the collection class it shards.
        fused_params: the embedding optimizer as TorchRec's sharders take it (``{"optimizer":
            EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": 0.05}``), for collections built without one.
    """

    def __init__(self, module_type: Type[FiitedEmbeddingBagCollection] = FiitedEmbeddingBagCollection,
                 fused_params: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self._module_type = module_type
        self._fused_params = dict(fused_params or {})

    @property
    def module_type(self) -> Type[FiitedEmbeddingBagCollection]:
        return self._module_type

    def sharding_types(self, compute_device_type: str) -> List[str]:
        return [ShardingType.TABLE_WISE.value]

    def compute_kernels(self, sharding_type: str, compute_device_type: str) -> List[str]:
        return [EmbeddingComputeKernel.FUSED.value]

    def shardable_parameters(self, module: FiitedEmbeddingBagCollection) -> Dict[str, nn.Parameter]:
        shares = table_budget_shares(module)
        out = {}
        for table in module.embedding_bag_configs():
            rows = max(1, math.ceil(shares[table.name] / (4 * table.embedding_dim)))
            out[table.name] = nn.Parameter(torch.empty(rows, table.embedding_dim, device="meta"), requires_grad=False)
        return out

    def shard(self, module: FiitedEmbeddingBagCollection, params: Dict[str, ParameterSharding], env: ShardingEnv,
              device: Optional[torch.device] = None, module_fqn: Optional[str] = None) -> ShardedFiitedEmbeddingBagCollection:
        return ShardedFiitedEmbeddingBagCollection(module, params, env, device or torch.device("cpu"), self._fused_params)
