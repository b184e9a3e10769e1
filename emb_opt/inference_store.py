"""The read-only chunk store of an exported (inference) FIITED collection: the live chunks and the row index.

``InferenceChunkStore`` keeps of a trained ``emb_opt.chunk_store.VhpiChunkStore`` only what a lookup reads, in
the same layout, so ``emb_opt.store_step`` (``plan_batch``, ``forward`` outside training, ``pool``) runs on it
unchanged and pools the same chunks with the same kernels -- bit for bit the trained store's eval output:

    pool_weights [S, c]           the live chunks (the trained store's dtype), rows in key order, each row's run
                                  contiguous (S = live chunks)
    pool_scale   [S, q] float32   int8 pools: each chunk's scale (q = 1; else q = 0)
    entry_keys   [R] int64        row key of each stored row, ascending (R = stored rows; with none stored, one
                                  empty entry: key -1, no chunks)
    entry_first  [R] int32        first slot of the row's run
    entry_chunks [R] int8         live chunks of the row
    hash_buckets [H] int32        VHPI hash table over ``entry_keys`` (H = R / max_load_factor, at least 16)
    table_rows   [T] int64        virtual rows per table (the id range a lookup checks)
    table_chunks [T] int32        chunks per row per table

No optimizer state, utilities, sketch, thresholds or counters: nothing trains it. ``exported_pooled`` is the
same lookup as one custom op (``emb_opt_inference::pooled``, with a fake implementation), which is what
``torch.export`` records: the lookup's checks and sizes depend on the ids, so it is opaque to the exported graph
and runs ``store_step`` when the exported program runs. Its checkpoint carries
``_extra_state`` = {"kind": "fiited_inference", "layout_version", "chunk_size", "max_probe"}; a load validates
the whole store first (``checkpoint_problems``) -- kind and version, chunk size, tables, every buffer's dtype and
shape, the compact layout, the hash table finding every row, finite weights -- and refuses a training
checkpoint of a ``VhpiChunkStore`` (export the trained model instead) or any problem with an error naming it,
leaving the store unchanged.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Optional

import torch

from cuda_ext import ops
from emb_opt import store_step
from emb_opt.budget import MIN_BUCKETS
from emb_opt.chunk_store import VhpiChunkStore
from emb_opt.store_base import ChunkStoreBase
from emb_opt.store_checkpoint import STORE_STATE, Checker, index_problems
from emb_opt.store_step import FeatureLayout

INFERENCE_KIND = "fiited_inference"
INFERENCE_LAYOUT_VERSION = 1
INFERENCE_STATE = ("pool_weights", "pool_scale", "entry_keys", "entry_first", "entry_chunks", "hash_buckets")
TABLE_STATE = ("table_rows", "table_chunks")
# every buffer's dtype but the pool's, which is the trained store's weight_dtype
_DTYPES = {"pool_scale": torch.float32, "entry_keys": torch.int64, "entry_first": torch.int32,
           "entry_chunks": torch.int8, "hash_buckets": torch.int32}  # fmt: skip
# buffers only a training store has: a checkpoint holding any of them is a training checkpoint
_TRAINING_ONLY = tuple(n for n in STORE_STATE if n not in INFERENCE_STATE)


class InferenceChunkStore(ChunkStoreBase):
    """The live chunks and row index of a trained store, read-only (see the module docstring).

    Args:
        store: the trained ``VhpiChunkStore`` whose live rows it keeps (copied, compacted; the trained store
            is not changed).

    Example::

        inference = InferenceChunkStore(fiited.store)
        entries, slots = inference.lookup_rows(row_keys)  # as fiited.store.lookup_rows, same chunks
    """

    def __init__(self, store: VhpiChunkStore) -> None:
        super().__init__()
        self.table_names: List[str] = list(store.table_names)
        self.max_chunks = store.max_chunks
        self.chunk_size = store.config.chunk_size
        self.max_probe = store.config.max_probe
        self.max_load_factor = store.config.max_load_factor
        # forwards whose per-sample weights still wait for their gradient (store_step's eval lookup counts them)
        self.pending_backward = 0
        self.register_buffer("table_rows", store.table_rows.detach().clone())
        self.register_buffer("table_chunks", store.table_chunks.detach().clone())
        with torch.no_grad():
            _, keys, counts = store.live_rows()
            slots, _ = store.live_keys()  # sorted by key: rows in key order, each row's chunks in order
            weights, scales = store.pool_weights[slots], store.pool_scale[slots]
        device = store.pool_weights.device
        self.register_buffer("pool_weights", weights.clone())
        self.register_buffer("pool_scale", scales.clone())
        self.register_buffer("entry_keys", torch.zeros(0, dtype=torch.int64, device=device))
        self.register_buffer("entry_first", torch.zeros(0, dtype=torch.int32, device=device))
        self.register_buffer("entry_chunks", torch.zeros(0, dtype=torch.int8, device=device))
        self.register_buffer("hash_buckets", torch.zeros(0, dtype=torch.int32, device=device))
        self._index(keys, counts)

    def _index(self, keys: torch.Tensor, counts: torch.Tensor) -> None:
        """Entries for rows ``keys`` (ascending) holding ``counts`` chunks each, runs laid end to end from slot 0,
        and a hash table over them."""
        device = self.pool_weights.device
        if keys.numel() == 0:  # one empty entry: the lookup kernels take a non-empty index
            keys, counts = torch.full((1,), -1, dtype=torch.int64, device=device), torch.zeros(1, dtype=torch.int64, device=device)
        self.entry_keys = keys.to(torch.int64).clone()
        self.entry_first = (torch.cumsum(counts, 0) - counts).to(torch.int32)
        self.entry_chunks = counts.to(torch.int8)
        buckets = ops.vhpi_rebuild(self.entry_keys, self.num_buckets(self.entry_keys.numel()), self.max_probe)
        if buckets.numel() == 0:
            raise RuntimeError(f"VHPI hash table of the inference store: a row key found no free bucket within "
                               f"max_probe={self.max_probe}; export from a collection with a larger max_probe")
        self.hash_buckets = buckets

    def num_buckets(self, rows: int) -> int:
        """Hash buckets for ``rows`` entries (the trained store's load factor)."""
        return max(MIN_BUCKETS, math.ceil(rows / self.max_load_factor))

    # ---- lookup (what emb_opt.store_step reads) --------------------------------------------------------------
    def exported_pooled(self, layout: FeatureLayout, values: torch.Tensor, offsets: torch.Tensor,
                        weights: Optional[torch.Tensor], batch_size: int) -> torch.Tensor:
        """``store_step``'s pooled lookup ``[B, out_dim]`` of a batch as one custom op (``pooled_op``): what
        ``torch.export`` records (no per-sample weight gradient)."""
        names = json.dumps([list(layout.feature_names), self.table_names])
        return pooled_op(values, offsets, weights, self.pool_weights, self.pool_scale, self.entry_keys,
                         self.entry_first, self.entry_chunks, self.hash_buckets, self.table_rows, self.table_chunks,
                         layout.feature_table, layout.feature_cols, batch_size, layout.out_dim, layout.pooling_mode,
                         self.max_probe, names)

    def allocated_bytes(self) -> Dict[str, int]:
        """Bytes by category, as ``VhpiChunkStore.allocated_bytes`` names them (no optimizer state, no utility)."""
        def nbytes(*tensors: torch.Tensor) -> int:
            return sum(t.numel() * t.element_size() for t in tensors)

        return {"weights": nbytes(self.pool_weights, self.pool_scale), "optimizer": 0,
                "index": nbytes(self.entry_keys, self.entry_first, self.entry_chunks, self.hash_buckets),
                "utility": 0, "metadata": nbytes(self.table_rows, self.table_chunks)}

    def total_bytes(self) -> int:
        return sum(self.allocated_bytes().values())

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def get_extra_state(self) -> Dict[str, Any]:
        """The kind and layout version of this store's buffers and the settings a checkpoint must match."""
        return {"kind": INFERENCE_KIND, "layout_version": INFERENCE_LAYOUT_VERSION, "chunk_size": self.chunk_size,
                "max_probe": self.max_probe}

    def checkpoint_problems(self, state_dict: Mapping[str, Any], prefix: str) -> List[str]:
        """Why the store entries of ``state_dict`` (under ``prefix``) cannot be loaded into this store; empty when
        they can (see the module docstring)."""
        where = prefix or "store."
        training = [prefix + n for n in _TRAINING_ONLY if prefix + n in state_dict]
        description = state_dict.get(prefix + "_extra_state")
        kind = description.get("kind") if isinstance(description, Mapping) else None
        if training or (isinstance(description, Mapping) and "optimizer" in description and kind != INFERENCE_KIND):
            found = f"{training[0]} and {len(training) - 1} more" if training else f"{where}_extra_state"
            return [f"{where.rstrip('.')}: the checkpoint is a training checkpoint of a FIITED store (it holds "
                    f"{found} training state); an inference collection loads only the state_dict of an export -- "
                    "load the checkpoint into the training model and call emb_opt.export_inference(model)"]
        present = [n for n in INFERENCE_STATE if prefix + n in state_dict]
        if not present:
            return []  # nothing of this store in the checkpoint (strict loads name the missing keys)
        if kind != INFERENCE_KIND or "layout_version" not in description:
            return [f"{where}_extra_state: the checkpoint does not say it is a FIITED inference store (kind "
                    f"{INFERENCE_KIND!r} and its layout_version); only the state_dict of emb_opt.export_inference "
                    "loads"]
        if description["layout_version"] != INFERENCE_LAYOUT_VERSION:
            return [f"{where}_extra_state: the checkpoint's inference layout_version {description['layout_version']!r} "
                    f"is not this version's {INFERENCE_LAYOUT_VERSION}; it cannot be loaded"]
        if description.get("chunk_size") != self.chunk_size:
            return [f"{where}: checkpoint was exported with chunk_size {description.get('chunk_size')!r} (this "
                    f"module: {self.chunk_size}); export a collection with the checkpoint's chunk size to load it"]
        for name in TABLE_STATE:
            value, mine = state_dict.get(prefix + name), getattr(self, name)
            if value is not None and not (isinstance(value, torch.Tensor) and value.shape == mine.shape
                                          and torch.equal(value.to(mine.device, mine.dtype), mine)):
                found = value.tolist() if isinstance(value, torch.Tensor) else type(value).__name__
                return [f"{prefix}{name}: checkpoint tables {found} differ from this module's {mine.tolist()} "
                        f"(tables {self.table_names})"]
        if len(present) < len(INFERENCE_STATE):
            missing = [prefix + n for n in INFERENCE_STATE if n not in present]
            return [f"{', '.join(missing)}: not in the checkpoint, which holds the rest of this inference store; a "
                    "store loads whole or not at all"]
        buffers = {n: state_dict[prefix + n] for n in INFERENCE_STATE}
        problems = self._shape_problems(buffers, prefix)
        if problems:
            return problems
        device = self.pool_weights.device
        return self._content_problems({n: t.detach().to(device) for n, t in buffers.items()}, prefix)

    def _shape_problems(self, b: Dict[str, Any], prefix: str) -> List[str]:
        dtypes = dict(_DTYPES, pool_weights=self.pool_weights.dtype)
        problems = [f"{prefix}{n}: expected a {dtypes[n]} tensor, got "
                    f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}"
                    for n, t in b.items() if not isinstance(t, torch.Tensor) or t.dtype != dtypes[n]]
        if problems:
            return problems
        two_dimensional = ("pool_weights", "pool_scale")
        problems = [f"{prefix}{n}: expected {2 if n in two_dimensional else 1} dimensions, got shape {tuple(t.shape)}"
                    for n, t in b.items() if t.dim() != (2 if n in two_dimensional else 1)]
        if problems:
            return problems
        if b["pool_weights"].shape[1] != self.chunk_size:
            problems.append(f"{prefix}pool_weights: checkpoint chunks of shape {tuple(b['pool_weights'].shape)[1:]} "
                            f"do not match this module's chunk_size {self.chunk_size}")
        if b["pool_scale"].shape[1] != self.pool_scale.shape[1]:
            problems.append(f"{prefix}pool_scale: expected {self.pool_scale.shape[1]} column(s) (one scale per chunk "
                            f"of an int8 pool, none otherwise), got shape {tuple(b['pool_scale'].shape)}")
        sizes = {n: int(b[n].numel()) for n in ("entry_keys", "entry_first", "entry_chunks")}
        if len(set(sizes.values())) > 1 or sizes["entry_keys"] < 1:
            problems.append(f"{prefix}entry_keys: the checkpoint's {', '.join(f'{n} ({k})' for n, k in sizes.items())} "
                            "must be one non-empty length; it is damaged")
        elif b["hash_buckets"].numel() != self.num_buckets(sizes["entry_keys"]):
            problems.append(f"{prefix}hash_buckets: expected {self.num_buckets(sizes['entry_keys'])} buckets for "
                            f"{sizes['entry_keys']} entries, got {b['hash_buckets'].numel()}")
        return problems

    def _content_problems(self, b: Dict[str, torch.Tensor], prefix: str) -> List[str]:
        """The row index (``store_checkpoint.index_problems``: keys, counts, runs, hash table) of the compact
        layout -- keys ascending, runs end to end from slot 0 filling the pool -- and finite weights."""
        keys, chunks = b["entry_keys"], b["entry_chunks"].to(torch.int64)
        check = Checker(prefix)
        check.first_bad("entry_chunks", (chunks < 1) & (keys.numel() > 1), chunks,
                        "a stored row holds 1 or more chunks (only a lone empty entry holds none)")
        check.first_bad("entry_keys", torch.cat([keys[1:] <= keys[:-1], keys.new_zeros(1, dtype=torch.bool)]), keys,
                        "row keys must be strictly ascending")
        check.first_bad("entry_first", b["entry_first"].to(torch.int64) != torch.cumsum(chunks, 0) - chunks,
                        b["entry_first"], "the runs must lie end to end from slot 0 in entry order")
        check.that("pool_weights", int(chunks.sum()) == b["pool_weights"].shape[0],
                   f"{b['pool_weights'].shape[0]} slots, but the entries hold {int(chunks.sum())} chunks")
        check.that("pool_scale", b["pool_scale"].shape[0] == b["pool_weights"].shape[0],
                   f"{b['pool_scale'].shape[0]} rows, but the pool holds {b['pool_weights'].shape[0]} slots")
        if check.problems:
            return check.problems
        index_problems(check, b, self.table_rows, self.table_chunks, b["pool_weights"].shape[0], keys.numel(),
                       self.max_chunks, self.max_probe)
        if check.problems:
            return check.problems
        weights, scales = b["pool_weights"].reshape(-1), b["pool_scale"].reshape(-1)
        if weights.is_floating_point():  # an int8 pool's weights are integers
            check.first_bad("pool_weights", ~torch.isfinite(weights), weights, "must be finite")
        check.first_bad("pool_scale", ~torch.isfinite(scales) | (scales < 0), scales, "must be finite and >= 0")
        return check.problems


class _StoreView:
    """An inference store's lookup buffers as ``store_step`` reads them (inside ``pooled_op``)."""

    def __init__(self, buffers: Dict[str, torch.Tensor], table_names: List[str], max_probe: int) -> None:
        self.__dict__.update(buffers)
        self.table_names, self.max_probe, self.pending_backward = table_names, max_probe, 0
        self.max_chunks = int(self.table_chunks.max())

    lookup_rows = InferenceChunkStore.lookup_rows
    scale_argument = InferenceChunkStore.scale_argument


@torch.library.custom_op("emb_opt_inference::pooled", mutates_args=())
def pooled_op(values: torch.Tensor, offsets: torch.Tensor, weights: Optional[torch.Tensor], pool_weights: torch.Tensor,
              pool_scale: torch.Tensor, entry_keys: torch.Tensor, entry_first: torch.Tensor, entry_chunks: torch.Tensor,
              hash_buckets: torch.Tensor, table_rows: torch.Tensor, table_chunks: torch.Tensor,
              feature_table: torch.Tensor, feature_cols: torch.Tensor, batch_size: int, out_dim: int,
              pooling_mode: int, max_probe: int, names: str) -> torch.Tensor:
    """The pooled lookup of an inference store (``store_step.plan_batch`` and ``pool``): float32 ``[batch_size,
    out_dim]``; ``names`` is the JSON ``[feature names, table names]`` its error messages use."""
    feature_names, table_names = json.loads(names)
    buffers = dict(pool_weights=pool_weights, pool_scale=pool_scale, entry_keys=entry_keys, entry_first=entry_first,
                   entry_chunks=entry_chunks, hash_buckets=hash_buckets, table_rows=table_rows,
                   table_chunks=table_chunks)
    store = _StoreView(buffers, table_names, max_probe)
    layout = FeatureLayout(feature_table, feature_cols, out_dim, pooling_mode, feature_names)
    plan = store_step.plan_batch(store, layout, values, offsets, weights, batch_size)
    return store_step.pool(store, layout, plan)


@pooled_op.register_fake
def _pooled_fake(values, offsets, weights, pool_weights, pool_scale, entry_keys, entry_first, entry_chunks,
                 hash_buckets, table_rows, table_chunks, feature_table, feature_cols, batch_size, out_dim, pooling_mode,
                 max_probe, names):
    return pool_weights.new_empty(batch_size, out_dim, dtype=torch.float32)
