"""Options of the FIITED embedding-dimension optimizer, and parsing of the optimizer names users pass.

Every knob the design exposes is here with the reason for its default:
* ``chunk_size`` c: rows of dimension D are cut into D/c chunks (16 floats = one 64-byte cache line). A chunk
  pays 4 bytes besides its floats (its utility) and a stored row 21 (key, run, buckets) plus its per-row
  optimizer state, so with row-wise Adagrad a whole D = 64 row costs 297 bytes at c = 16, 289 at c = 32 and
  285 as one chunk (``emb_opt.budget``). Smaller chunks give finer widths and pay more utility floats.
* ``optimizer``: fused sparse optimizer on the chunk pool -- "sgd", "adagrad", "rowwise_adagrad" (TorchRec's
  and FBGEMM's default; one accumulator per row, kept at the row's index entry, ``store.entry_state``, as
  EXACT_ROWWISE_ADAGRAD does per row). TorchRec / FBGEMM spellings
  (``EmbOptimType.EXACT_ROWWISE_ADAGRAD``, ``torchrec.optim.RowWiseAdagrad``, ``torch.optim.SGD``) are accepted.
* ``utility``: how a chunk earns its place: "freq" (access count, as TorchRec ITEP prunes rows), "grad" (mean
  gradient norm per access), "freq_grad" (sum of per-access gradient norms = freq x mean grad norm, AdaEmbed's
  and FIITED's rule; default). Accumulated every step, multiplied by ``utility_decay`` at every resize (an EMA
  over intervals).
* schedule: the first resize at ``warmup_steps``, then every ``resize_interval`` training steps; and under
  pressure -- admissions were denied since the last resize (the budget is full) -- as soon as
  ``pressure_resize_steps`` steps have passed since the last resize (0 = off). Without it, a store that fills
  in its first steps serves whichever rows came first and reads every other row as zeros until
  ``warmup_steps``.
* ``reserve_fraction``: share of the budget a resize leaves free for rows admitted until the next one.
* ``threshold_mode``: "global" -- one utility threshold for every chunk position (the top chunks by utility
  fill the budget) -- or "per_position" -- utilities are first divided by their chunk position's mean, so each
  position gets its own threshold ``theta_k = theta * mean_k``.
* ``position_exponent`` beta: position k's threshold is ``theta * (k + 1) ** beta`` -- the diminishing-returns
  prior on later chunks (see ``emb_opt.resize``); 0 = one threshold for all positions.
* ``prefix_dropout`` p: in each training step a row uses only a random prefix of its chunks with probability
  p (nested, Matryoshka-style dropout), so leading chunks carry most of a row's information and truncating a
  row costs less; 0 = off.
* hash table (over stored rows): ``max_load_factor`` (buckets = row entries / load) and ``max_probe``
  (linear-probe bound). The longest probe run of linear probing grows like ``ln(n) / (a - 1 - ln a)`` at load
  a: ~56 buckets for 5e4 keys and ~95 for 1e8 at a = 0.5, but ~290 for 5e4 keys at 0.75 -- so 0.5 with a bound
  of 128 (~2.7 bytes of buckets per row more than at 0.75, and no insert ever fails in practice).
* ``sketch_fraction``: share of the budget for the count-min sketch that remembers the utility of rows or
  chunks that are not stored (so they can be re-admitted when they earn it).
* ``fallback_rows`` F: ids that hold no chunk in a step (never admitted, pruned, or denied while the store is
  full) read one of F shared rows of their table, trained like chunks (``emb_opt.fallback_rows``), instead of
  zeros -- the out-of-vocabulary row of a frequency vocabulary (F = 1), CAFE's shared hashed rows (F > 1); 0 = off
  (they read zeros). Their bytes come out of the budget.
* ``fallback_init`` (needs ``fallback_rows``): a row admitted without chunks starts from the fallback row it
  read until then -- what its table's unstored ids have learnt -- instead of its hashed init values, so its output
  does not jump at admission and what its earlier accesses taught the shared row is not lost (CAFE's migration
  of an id from the shared hashed table into its own row). Rows that grow keep the hashed init for new chunks.
* ``doorkeeper``: a row without chunks is admitted only once the sketch holds evidence of an earlier access (its
  first access leaves its utility there), as TinyLFU's doorkeeper keeps one-hit ids out of a cache; rows that hold
  chunks grow as before. Off: rows are admitted on first touch while the budget allows. ``doorkeeper_when_full``
  applies it only in steps whose requests do not all fit the budget: while the store has room, first touch
  admits (a one-off row then costs nothing that another row wanted, and a resize prunes it).
* ``weight_dtype``: how the pool stores chunk weights -- "float32" (default), "bfloat16" or "int8" (the last two
  on the CPU only so far). bfloat16 halves a chunk's weight bytes and int8 quarters them (plus a float32 scale per
  chunk), so at equal bytes the store holds more rows and chunks (D = 64, c = 16, row-wise Adagrad: a whole row
  costs 297 bytes in float32, 169 in bfloat16, 121 in int8; 105 in int8 at c = 32); the fused optimizer computes
  in float32 and stores each updated weight rounded stochastically (unbiased: an update below half a step of the
  stored type moves the weight in expectation), as FBGEMM trains fp16 tables; an int8 chunk's scale is
  ``max |w| / 127`` after each update. Optimizer state, utilities, the sketch and the output stay float32.
* ``nonfinite``: what a training step does when its output gradient or per-sample weights hold NaN or inf --
  "skip" (default): no non-finite value reaches chunks, optimizer state, utilities or the sketch (non-finite
  weights skip the step; a non-finite gradient skips each row it reaches, so a NaN loss skips the whole step,
  as ``torch.amp.GradScaler`` does), the step is counted (``counter_dict()["skipped_nonfinite"]``) and warned
  about once; "raise": the step is checked first and raises a ``FloatingPointError`` before anything changes.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

import torch


class OptimizerType(str, Enum):
    """The fused sparse optimizers and the state each keeps (per chunk slot, per stored row, per dense row)."""

    SGD = "sgd"
    ADAGRAD = "adagrad"
    ROWWISE_ADAGRAD = "rowwise_adagrad"

    def state_width(self, chunk_size: int) -> int:
        """Floats of optimizer state per chunk slot (Adagrad: one per weight)."""
        return _STATE_FLOATS[self.value][0] * chunk_size

    @property
    def row_state_width(self) -> int:
        """Floats of optimizer state per stored row, kept at its index entry (row-wise Adagrad's accumulator)."""
        return _STATE_FLOATS[self.value][1]

    def dense_state_bytes_per_row(self, dim: int) -> int:
        """Bytes of optimizer state a full (dense) table row of ``dim`` floats carries with this optimizer."""
        per_weight, per_row = _STATE_FLOATS[self.value]
        return 4 * (per_weight * dim + per_row)


# optimizer state floats: (per weight, per row)
_STATE_FLOATS = {"sgd": (0, 0), "adagrad": (1, 0), "rowwise_adagrad": (0, 1)}


class UtilityRule(str, Enum):
    """How a chunk earns its place: access count, mean gradient norm per access, or their product (the sum of
    per-access gradient norms)."""

    FREQ = "freq"
    GRAD = "grad"
    FREQ_GRAD = "freq_grad"


# FiitedConfig.weight_dtype -> pool dtype (int8: with a float32 scale per chunk, emb_opt.chunk_precision)
WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8}

MAX_INIT_SEED = 1 << 40  # the hashed init mixes the seed into 64-bit keys (emb_opt.hashed_init)

_OPTIMIZER_ALIASES = {
    "sgd": OptimizerType.SGD,
    "exact_sgd": OptimizerType.SGD,
    "adagrad": OptimizerType.ADAGRAD,
    "exact_adagrad": OptimizerType.ADAGRAD,
    "rowwise_adagrad": OptimizerType.ROWWISE_ADAGRAD,
    "exact_rowwise_adagrad": OptimizerType.ROWWISE_ADAGRAD,
    "rowwiseadagrad": OptimizerType.ROWWISE_ADAGRAD,
}


def parse_optimizer(value: Any) -> OptimizerType:
    """Accept our names, FBGEMM's ``EmbOptimType`` and torch / torchrec optimizer classes."""
    if isinstance(value, OptimizerType):
        return value
    if isinstance(value, type):  # torch.optim.SGD, torch.optim.Adagrad, torchrec.optim.RowWiseAdagrad
        name = value.__name__.lower()
    elif isinstance(value, Enum):  # fbgemm_gpu EmbOptimType
        name = value.name.lower()
    else:
        name = str(value).lower()
    if name not in _OPTIMIZER_ALIASES:
        raise ValueError(f"unsupported optimizer {value!r}; expected one of sgd, adagrad, rowwise_adagrad")
    return _OPTIMIZER_ALIASES[name]


@dataclass
class FiitedConfig:
    chunk_size: int = 16
    optimizer: OptimizerType = OptimizerType.ROWWISE_ADAGRAD
    learning_rate: float = 0.01
    eps: float = 1e-8
    utility: UtilityRule = UtilityRule.FREQ_GRAD
    warmup_steps: int = 1000
    resize_interval: int = 500
    pressure_resize_steps: int = 50
    utility_decay: float = 0.5
    reserve_fraction: float = 0.05
    threshold_mode: str = "global"
    position_exponent: float = 0.0
    prefix_dropout: float = 0.0
    init_seed: int = 0  # seeds the deterministic chunk init (emb_opt.hashed_init: with table name, row and column)
    max_load_factor: float = 0.5
    max_probe: int = 128
    sketch_fraction: float = 0.05
    initial_capacity: int = 1 << 16  # slots allocated at start (grows x1.5 up to the budget)

    fallback_rows: int = 0  # shared rows per table for ids without chunks (0: they read zeros)
    fallback_init: bool = False  # a newly admitted row starts from its fallback row's values
    doorkeeper: bool = False  # admit a row without chunks only from its second access
    doorkeeper_when_full: bool = False  # ... and only in steps whose requests do not all fit the budget
    weight_dtype: str = "float32"  # chunk weights in the pool: "float32", "bfloat16" or "int8" (stochastic rounding)
    nonfinite: str = "skip"  # a step whose output gradient or per-sample weights hold NaN / inf: "skip" or "raise"

    @property
    def weight_torch_dtype(self) -> torch.dtype:
        """The pool's torch dtype (``weight_dtype``)."""
        return WEIGHT_DTYPES[self.weight_dtype]

    def __post_init__(self) -> None:
        self.optimizer = parse_optimizer(self.optimizer)
        if isinstance(self.weight_dtype, torch.dtype):  # torch.bfloat16 is accepted for "bfloat16"
            names = {dtype: name for name, dtype in WEIGHT_DTYPES.items()}
            self.weight_dtype = names.get(self.weight_dtype, str(self.weight_dtype))
        self.utility = UtilityRule(self.utility) if not isinstance(self.utility, UtilityRule) else self.utility
        integers = ("chunk_size", "warmup_steps", "resize_interval", "pressure_resize_steps", "init_seed",
                    "max_probe", "initial_capacity", "fallback_rows")
        for name in integers:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"FiitedConfig: {name} must be an int, got {value!r}")
            setattr(self, name, int(value))
        reals = ("learning_rate", "eps", "utility_decay", "reserve_fraction", "position_exponent", "prefix_dropout",
                 "max_load_factor", "sketch_fraction")
        for name in reals:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"FiitedConfig: {name} must be a finite number, got {value!r}")
            setattr(self, name, float(value))
        for name in ("doorkeeper", "doorkeeper_when_full", "fallback_init"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"FiitedConfig: {name} must be a bool, got {getattr(self, name)!r}")
        checks = [
            (self.chunk_size >= 1, f"chunk_size must be >= 1, got {self.chunk_size}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.eps >= 0, f"eps must be >= 0, got {self.eps}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.resize_interval >= 1, f"resize_interval must be >= 1, got {self.resize_interval}"),
            (self.pressure_resize_steps >= 0, f"pressure_resize_steps must be >= 0, got {self.pressure_resize_steps}"),
            (0 < self.utility_decay <= 1, f"utility_decay must be in (0, 1], got {self.utility_decay}"),
            (0 <= self.reserve_fraction < 1, f"reserve_fraction must be in [0, 1), got {self.reserve_fraction}"),
            (self.threshold_mode in ("global", "per_position"), f"threshold_mode must be 'global' or 'per_position', got {self.threshold_mode!r}"),
            (0 <= self.prefix_dropout < 1, f"prefix_dropout must be in [0, 1), got {self.prefix_dropout}"),
            (self.position_exponent >= 0, f"position_exponent must be >= 0, got {self.position_exponent}"),
            (0 <= self.init_seed < MAX_INIT_SEED, f"init_seed must be in [0, 2^40), got {self.init_seed}"),
            (0 < self.max_load_factor < 1, f"max_load_factor must be in (0, 1), got {self.max_load_factor}"),
            (self.max_probe >= 1, f"max_probe must be >= 1, got {self.max_probe}"),
            (0 < self.sketch_fraction < 0.5, f"sketch_fraction must be in (0, 0.5), got {self.sketch_fraction}"),
            (self.initial_capacity >= 1, f"initial_capacity must be >= 1, got {self.initial_capacity}"),
            (0 <= self.fallback_rows <= 1 << 20, f"fallback_rows must be in [0, 2^20], got {self.fallback_rows}"),
            (not self.doorkeeper_when_full or self.doorkeeper, "doorkeeper_when_full=True says when the doorkeeper "
             "applies: it needs doorkeeper=True"),
            (not self.fallback_init or self.fallback_rows > 0, "fallback_init=True starts new rows from their "
             "fallback rows: it needs fallback_rows > 0"),
            (self.weight_dtype in WEIGHT_DTYPES, f"weight_dtype must be one of {sorted(WEIGHT_DTYPES)}, got "
             f"{self.weight_dtype!r}"),
            (self.nonfinite in ("skip", "raise"), f"nonfinite must be 'skip' or 'raise', got {self.nonfinite!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"FiitedConfig: {message}")


def merge_config(config: Optional[FiitedConfig], **overrides: Any) -> FiitedConfig:
    """``config`` (or the defaults) with the non-None ``overrides`` applied."""
    base = dict(vars(config)) if config is not None else {}
    base.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(base) - set(FiitedConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown FIITED option(s) {sorted(unknown)}")
    return FiitedConfig(**base)
