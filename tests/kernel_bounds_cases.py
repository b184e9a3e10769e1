"""Hostile calls of every native op: for each op and each index argument, a valid call (tests/kernel_cases.py) with
one value moved out of range (or one relation between arguments broken). tests/test_kernels_bounds.py runs them all
in ONE subprocess per device and index check mode (``python kernel_bounds_cases.py DEVICE``), which prints one line
per case, so that a crash (a signal) fails the cases it did not reach instead of killing pytest.

Every case must raise (IndexError / RuntimeError / ValueError) on the CPU in every mode, on CUDA in mode "all",
and from the reference. On CUDA in mode "ids" the checks of internal indices are left to the kernels, which test
each index they load: there such a case must only come back without a signal, as must a broken caller invariant
the ops do not check (a slot in two unique rows). Each op's valid call is a case too, which must return everywhere.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

import torch

from kernel_cases import lookup_args, make_case, ops, unique_args

from cuda_ext import reference
from cuda_ext.layout import MAX_ROWS, OPTIMIZER_CODES, pack_row_key

ARGS: Dict[str, List[str]] = {
    "mix_hash": ["ids", "num_buckets", "seed"],
    "semantic_id_tokens": ["ids", "codes", "starts", "lengths", "token_offsets", "add", "codebook_size",
                           "num_buckets"],
    "vhpi_lookup_runs": ["buckets", "entry_keys", "entry_first", "entry_chunks", "row_keys", "max_chunks",
                         "max_probe"],
    "vhpi_insert_": ["buckets", "slot_keys", "slots", "max_probe"],
    "vhpi_rebuild": ["slot_keys", "num_buckets", "max_probe"],
    "chunk_bag_unique": ["values", "offsets", "feature_table", "table_rows", "batch_size"],
    "chunk_bag_forward": ["pool", "slots", "inverse", "offsets", "weights", "feature_table", "table_chunks",
                          "feature_cols", "batch_size", "out_dim", "pooling_mode"],
    "chunk_bag_backward_update_": ["pool", "optim_state", "slot_utility", "grad_out", "slots", "row_keys",
                                   "unique_offsets", "unique_occ", "occ_bag", "offsets", "weights", "table_chunks",
                                   "feature_cols", "batch_size", "pooling_mode", "optimizer", "lr", "eps",
                                   "utility_rule", "need_weight_grad", "row_entries"],
}
RAISED = ("IndexError", "RuntimeError", "ValueError")


@dataclass
class Case:
    name: str
    op: str
    change: Callable[[Dict[str, Any]], None]  # edits a copy of the op's valid arguments in place
    user_facing: bool = False  # an argument checked in every mode on every device
    valid: bool = False  # the op's valid call, unchanged: it must return (no check may reject it)
    unchecked: bool = False  # a broken caller invariant the op does not check: it must only end without a signal
    base: Dict[str, Any] = field(default_factory=dict)

    def arguments(self, device: str) -> List[Any]:
        args = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in self.base.items()}
        self.change(args)
        return [args[k].to(device) if isinstance(args[k], torch.Tensor) else args[k] for k in ARGS[self.op]]

    def expect_raise(self, device: str, mode: str) -> bool:
        return not (self.valid or self.unchecked) and (device == "cpu" or self.user_facing or mode == "all")


def _set(name: str, index, value) -> Callable[[Dict[str, Any]], None]:
    def change(args: Dict[str, Any]) -> None:
        args[name][index] = value
    return change


def _replace(name: str, make: Callable[[Dict[str, Any]], Any]) -> Callable[[Dict[str, Any]], None]:
    def change(args: Dict[str, Any]) -> None:
        args[name] = make(args)
    return change


def _shorten(name: str) -> Callable[[Dict[str, Any]], None]:
    return _replace(name, lambda args: args[name][:-1])


def valid_arguments() -> Dict[str, Dict[str, Any]]:
    case = make_case("c4", 0)
    rk, inverse, uo, uocc, ob, _ = reference.chunk_bag_unique(*unique_args(case))
    entries, slots = reference.vhpi_lookup_runs(*lookup_args(case, rk))
    num_entries = case["entry_keys"].numel()
    slot_keys = torch.tensor([64, 65, -1, 128, 129, 130], dtype=torch.int64)
    common = dict(offsets=case["offsets"], weights=case["weights"], table_chunks=case["table_chunks"],
                  feature_cols=case["feature_cols"], batch_size=case["batch"])
    return {
        "mix_hash": dict(ids=torch.arange(20).reshape(4, 5), num_buckets=7, seed=1),
        "semantic_id_tokens": dict(ids=torch.arange(-2, 12), codes=torch.randint(0, 8, (10, 3)), starts=[0, 1],
                                   lengths=[1, 2], token_offsets=[0, 3], add=1, codebook_size=8, num_buckets=100),
        "vhpi_lookup_runs": dict(zip(ARGS["vhpi_lookup_runs"], lookup_args(case, rk))),
        "vhpi_insert_": dict(buckets=torch.full((16,), -1, dtype=torch.int32), slot_keys=slot_keys,
                             slots=torch.tensor([0, 1, 3], dtype=torch.int32), max_probe=8),
        "vhpi_rebuild": dict(slot_keys=slot_keys, num_buckets=16, max_probe=8),
        "chunk_bag_unique": dict(zip(ARGS["chunk_bag_unique"], unique_args(case))),
        "chunk_bag_forward": dict(pool=case["pool"], slots=slots, inverse=inverse, feature_table=case["feature_table"],
                                  out_dim=case["out_dim"], pooling_mode=1, **common),
        "chunk_bag_backward_update_": dict(
            pool=case["pool"], optim_state=torch.rand(num_entries, 1), slot_utility=torch.zeros(case["pool"].shape[0]),
            grad_out=torch.randn(case["batch"], case["out_dim"]), slots=slots, row_keys=rk, unique_offsets=uo,
            unique_occ=uocc, occ_bag=ob, pooling_mode=1, optimizer=OPTIMIZER_CODES["rowwise_adagrad"], lr=0.05,
            eps=1e-8, utility_rule=2, need_weight_grad=True, row_entries=entries, **common),
    }


def _stored_row(args: Dict[str, Any]) -> int:
    """A unique row that holds chunks (and so an index entry)."""
    return int((args["slots"][:, 0] >= 0).nonzero()[0, 0])


def _found_entry(args: Dict[str, Any]) -> int:
    """An entry of the row index that the lookup finds (the first queried row's)."""
    return int(reference.vhpi_lookup_runs(*[args[k] for k in ARGS["vhpi_lookup_runs"]])[0].max())


def _corrupt_home_bucket(value: int) -> Callable[[Dict[str, Any]], None]:
    def change(args: Dict[str, Any]) -> None:
        home = reference.vhpi.home_bucket(args["row_keys"][:1], args["buckets"].numel())
        args["buckets"][int(home)] = value
    return change


def _chunk_bag_cases() -> List[Case]:
    fwd, bwd = "chunk_bag_forward", "chunk_bag_backward_update_"
    cases: List[Case] = []
    for op in (fwd, bwd):
        s = op.split("_")[2]
        cases += [
            Case(f"{s}: slots past the pool", op,
                 lambda a: a["slots"].__setitem__((_stored_row(a), 0), a["pool"].shape[0])),
            Case(f"{s}: slots below -1", op, lambda a: a["slots"].__setitem__((_stored_row(a), 0), -2)),
            Case(f"{s}: live slots not a prefix", op, lambda a: a["slots"].__setitem__((_stored_row(a), 0), -1)),
            Case(f"{s}: offsets[0] != 0", op, _set("offsets", 0, 1)),
            Case(f"{s}: offsets decrease", op, _set("offsets", 5, -1)),
            Case(f"{s}: offsets past the values", op, _set("offsets", -1, 10**6)),
            Case(f"{s}: offsets of the wrong length", op, _shorten("offsets")),
            Case(f"{s}: surplus weights", op,
                 _replace("weights", lambda a: torch.cat([a["weights"], a["weights"][:1]]))),
            Case(f"{s}: missing weights", op, _shorten("weights")),
            Case(f"{s}: table_chunks past the slots' width", op, _set("table_chunks", 0, 4)),
            Case(f"{s}: negative table_chunks", op, _set("table_chunks", 1, -1)),
            Case(f"{s}: negative feature_cols", op, _set("feature_cols", 1, -4)),
            Case(f"{s}: pooling mode 2", op, _replace("pooling_mode", lambda a: 2)),
        ]
    cases += [
        Case("forward: inverse past the unique rows", fwd, _set("inverse", 3, 10**5)),
        Case("forward: negative inverse", fwd, _set("inverse", 0, -1)),
        Case("forward: feature_table past the tables", fwd, _set("feature_table", 2, 3)),
        Case("forward: negative feature_table", fwd, _set("feature_table", 0, -1)),
        Case("forward: feature_cols pass out_dim", fwd, _set("feature_cols", 3, 30)),
        Case("forward: out_dim too small", fwd, _replace("out_dim", lambda a: a["out_dim"] - 1)),
        Case("backward: the audit's slots [[0, 1], [4, 5]] on a 4-row pool", bwd, _audit_case),
        Case("backward: a slot in two unique rows (the caller's invariant)", bwd, _share_a_slot, unchecked=True),
        Case("backward: negative row_keys", bwd, _set("row_keys", 0, -64)),
        Case("backward: row_keys of a table past table_chunks", bwd,
             _set("row_keys", 0, int(pack_row_key(torch.tensor(3), torch.tensor(0))))),
        Case("backward: unique_offsets[0] != 0", bwd, _set("unique_offsets", 0, 1)),
        Case("backward: unique_offsets decrease", bwd, _set("unique_offsets", 2, 0)),
        Case("backward: unique_offsets end before nnz", bwd,
             _replace("unique_offsets", lambda a: torch.cat([a["unique_offsets"][:-1], a["unique_offsets"][-2:-1]]))),
        Case("backward: unique_offsets of the wrong length", bwd, _shorten("unique_offsets")),
        Case("backward: unique_occ past nnz", bwd, _set("unique_occ", 1, 10**5)),
        Case("backward: negative unique_occ", bwd, _set("unique_occ", 0, -1)),
        Case("backward: occ_bag past F*B", bwd, _set("occ_bag", 1, 64)),
        Case("backward: negative occ_bag", bwd, _set("occ_bag", 0, -1)),
        Case("backward: occ_bag of the wrong length", bwd, _shorten("occ_bag")),
        Case("backward: feature_cols past grad_out", bwd, _set("feature_cols", 3, 40)),
        Case("backward: a row's columns pass grad_out", bwd, _set("feature_cols", 3, 30)),
        Case("backward: grad_out of the wrong batch", bwd, _replace("grad_out", lambda a: a["grad_out"][:-1])),
        Case("backward: grad_out too narrow", bwd, _replace("grad_out", lambda a: a["grad_out"][:, :-1].contiguous())),
        Case("backward: row_entries past the accumulators", bwd,
             lambda a: a["row_entries"].__setitem__(_stored_row(a), a["optim_state"].shape[0])),
        Case("backward: no accumulator for a row holding chunks", bwd,
             lambda a: a["row_entries"].__setitem__(_stored_row(a), -1)),
        Case("backward: row_entries below -1", bwd, lambda a: a["row_entries"].__setitem__(_stored_row(a), -3)),
        Case("backward: row_entries of the wrong length", bwd, _shorten("row_entries")),
        Case("backward: row-wise Adagrad without row_entries", bwd, _replace("row_entries", lambda a: None)),
        Case("backward: slot_utility shorter than the pool", bwd, _shorten("slot_utility")),
        Case("backward: Adagrad state of the wrong shape", bwd, _adagrad_with_row_state),
        Case("backward: optimizer code 3", bwd, _replace("optimizer", lambda a: 3)),
        Case("backward: utility rule 3", bwd, _replace("utility_rule", lambda a: 3)),
    ]
    return cases


def _audit_case(args: Dict[str, Any]) -> None:
    """Two unique rows of a 2-chunk table, one of them on slots past a 4-row pool (a heap write past the pool)."""
    args.update(pool=torch.randn(4, 4), optim_state=torch.zeros(0, 0), slot_utility=torch.zeros(4),
                grad_out=torch.randn(2, 8), slots=torch.tensor([[0, 1], [4, 5]], dtype=torch.int32),
                row_keys=torch.tensor([0, 64]), unique_offsets=torch.tensor([0, 1, 2]),
                unique_occ=torch.tensor([0, 1], dtype=torch.int32), occ_bag=torch.tensor([0, 1], dtype=torch.int32),
                offsets=torch.tensor([0, 1, 2]), weights=None, table_chunks=torch.tensor([2], dtype=torch.int32),
                feature_cols=torch.tensor([0]), batch_size=2, optimizer=OPTIMIZER_CODES["sgd"], row_entries=None)


def _share_a_slot(args: Dict[str, Any]) -> None:
    stored = (args["slots"][:, 0] >= 0).nonzero().reshape(-1)
    args["slots"][int(stored[1]), 0] = args["slots"][int(stored[0]), 0]


def _adagrad_with_row_state(args: Dict[str, Any]) -> None:
    args["optimizer"] = OPTIMIZER_CODES["adagrad"]


def all_cases() -> List[Case]:
    cases = [
        Case("mix_hash: negative id", "mix_hash", _set("ids", (1, 2), -7), user_facing=True),
        Case("semantic_id_tokens: levels past the codes", "semantic_id_tokens", _replace("starts", lambda a: [0, 2]),
             user_facing=True),
        Case("semantic_id_tokens: negative start", "semantic_id_tokens", _replace("starts", lambda a: [-1, 0]),
             user_facing=True),
        Case("semantic_id_tokens: token_offsets not reduced", "semantic_id_tokens",
             _replace("token_offsets", lambda a: [0, 100]), user_facing=True),
        Case("lookup_runs: bucket past the entries", "vhpi_lookup_runs",
             lambda a: _corrupt_home_bucket(a["entry_keys"].numel() + 5)(a)),
        Case("lookup_runs: bucket below -1", "vhpi_lookup_runs", _corrupt_home_bucket(-7)),
        Case("lookup_runs: entry_chunks past 64", "vhpi_lookup_runs",
             lambda a: a["entry_chunks"].__setitem__(_found_entry(a), 100)),
        Case("lookup_runs: negative entry_chunks", "vhpi_lookup_runs",
             lambda a: a["entry_chunks"].__setitem__(_found_entry(a), -3)),
        Case("lookup_runs: negative entry_first", "vhpi_lookup_runs",
             lambda a: a["entry_first"].__setitem__(_found_entry(a), -5)),
        Case("lookup_runs: entry_first whose run passes int32", "vhpi_lookup_runs",
             lambda a: a["entry_first"].__setitem__(_found_entry(a), 2**31 - 10)),
        Case("lookup_runs: entry_first of the wrong length", "vhpi_lookup_runs",
             _shorten("entry_first")),
        Case("lookup_runs: max_chunks 65", "vhpi_lookup_runs", _replace("max_chunks", lambda a: 65)),
        Case("insert: slot past slot_keys", "vhpi_insert_", _set("slots", 1, 6)),
        Case("insert: negative slot", "vhpi_insert_", _set("slots", 2, -1)),
        Case("insert: slot without a key", "vhpi_insert_", _set("slots", 2, 2)),
        Case("rebuild: no buckets", "vhpi_rebuild", _replace("num_buckets", lambda a: 0)),
        Case("rebuild: max_probe 0", "vhpi_rebuild", _replace("max_probe", lambda a: 0)),
        Case("unique: offsets[0] != 0", "chunk_bag_unique", _set("offsets", 0, 1), user_facing=True),
        Case("unique: offsets decrease", "chunk_bag_unique", _set("offsets", 5, -1), user_facing=True),
        Case("unique: offsets past the values", "chunk_bag_unique", _set("offsets", -1, 10**6), user_facing=True),
        Case("unique: offsets of the wrong length", "chunk_bag_unique", _shorten("offsets"), user_facing=True),
        Case("unique: feature_table past the tables", "chunk_bag_unique", _set("feature_table", 1, 3),
             user_facing=True),
        Case("unique: negative feature_table", "chunk_bag_unique", _set("feature_table", 0, -1), user_facing=True),
        Case("unique: table_rows past the key's row bits", "chunk_bag_unique", _set("table_rows", 0, MAX_ROWS + 1)),
        Case("unique: negative batch size", "chunk_bag_unique", _replace("batch_size", lambda a: -1),
             user_facing=True),
    ] + _chunk_bag_cases()
    bases = valid_arguments()
    cases += [Case(f"{op}: valid call", op, lambda a: None, valid=True) for op in bases]
    for case in cases:
        case.base = bases[case.op]
    assert len({case.name for case in cases}) == len(cases)
    return cases


def outcome(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except Exception as error:  # noqa: BLE001 -- the kind of error is the result
        kind = type(error).__name__
        return kind if kind in RAISED else f"other {kind}: {str(error).splitlines()[0][:200]}"
    return "returned"


def main(device: str) -> None:
    """One line per case: ``CASE <name>\\t<outcome>`` (flushed, so a crash shows where it happened)."""
    for case in all_cases():
        def run(case=case):
            getattr(ops, case.op)(*case.arguments(device))
            if device == "cuda":
                torch.cuda.synchronize()
        print(f"CASE {case.name}\t{outcome(run)}", flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
