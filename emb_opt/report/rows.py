"""The rows of a memory report: one dict per table (columns ``COLUMNS``), a ``(shared)`` row and a ``TOTAL``
row per collection, and the DataFrame they make (``report_frame``)."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Sequence

import torch

if TYPE_CHECKING:  # pandas is imported when a report is built, not with emb_opt
    import pandas

COLUMNS = [
    "module", "table", "kind", "optimizer", "virtual_rows", "physical_rows", "embedding_dim", "chunk_size",
    "live_rows", "live_chunks", "mean_dim", "weights_bytes", "optimizer_bytes", "index_bytes", "utility_bytes",
    "metadata_bytes", "total_bytes", "full_bytes", "compression_ratio", "dims_histogram",
]  # fmt: skip
BYTE_COLUMNS = ["weights_bytes", "optimizer_bytes", "index_bytes", "utility_bytes", "metadata_bytes"]
INT_COLUMNS = ["virtual_rows", "physical_rows", "embedding_dim", "chunk_size", "live_rows", "live_chunks",
               *BYTE_COLUMNS, "total_bytes", "full_bytes"]  # fmt: skip
MAIN_COLUMNS = ["module", "table", "kind", "virtual_rows", "live_rows", "mean_dim", "weights_bytes",
                "optimizer_bytes", "index_bytes", "utility_bytes", "metadata_bytes", "total_bytes", "full_bytes",
                "compression_ratio"]  # fmt: skip
SHARED, TOTAL, ALL = "(shared)", "TOTAL", "(all)"

@dataclass
class CollectionReport:
    """The rows (dicts keyed by ``COLUMNS``) of one collection, and its FIITED telemetry if any."""

    module: str
    kind: str
    rows: List[Dict[str, Any]]
    telemetry: List[Dict[str, Any]] = field(default_factory=list)


def nbytes(t: Any) -> int:
    return int(t.numel()) * torch.empty((), dtype=t.dtype).element_size()


def make_row(module: str, table: str, kind: str, optimizer: str, **values: Any) -> Dict[str, Any]:
    row: Dict[str, Any] = {c: None for c in COLUMNS}
    row.update(module=module, table=table, kind=kind, optimizer=optimizer, dims_histogram="")
    for c in BYTE_COLUMNS:
        row[c] = 0
    row.update(values)
    row["total_bytes"] = sum(int(row[c]) for c in BYTE_COLUMNS)
    full, total = row.get("full_bytes"), row["total_bytes"]
    if full is not None:
        row["compression_ratio"] = full / total if total else math.inf
    return row


def format_histogram(counts: Mapping[int, int]) -> str:
    """``{0: 9520, 16: 300}`` -> ``"0:9520 16:300"`` (dims ascending, empty bins left out)."""
    return " ".join(f"{d}:{n}" for d, n in sorted(counts.items()) if n)


def parse_histogram(text: Any) -> Dict[int, int]:
    """Inverse of ``format_histogram`` (NaN / empty -> {})."""
    if not isinstance(text, str) or not text.strip():
        return {}
    return {int(d): int(n) for d, n in (item.split(":") for item in text.split())}


def sum_rows(module: str, table: str, kind: str, optimizer: str, parts: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """A row adding up ``parts`` (a collection's tables and shared row, or several collections' totals)."""
    def total(column: str) -> int:
        return sum(int(r[column] or 0) for r in parts)

    hist: Counter = Counter()
    for r in parts:
        hist.update(parse_histogram(r["dims_histogram"]))
    live_rows = total("live_rows")
    sizes = {r["chunk_size"] for r in parts if r["chunk_size"] is not None}
    return make_row(
        module, table, kind, optimizer,
        virtual_rows=total("virtual_rows"), physical_rows=total("physical_rows"),
        chunk_size=sizes.pop() if len(sizes) == 1 else None, live_rows=live_rows, live_chunks=total("live_chunks"),
        mean_dim=sum(float(r["mean_dim"] or 0) * int(r["live_rows"] or 0) for r in parts) / max(1, live_rows),
        full_bytes=total("full_bytes"), dims_histogram=format_histogram(hist),
        **{c: total(c) for c in BYTE_COLUMNS},
    )  # fmt: skip


def report_frame(collections: Sequence[CollectionReport]) -> "pandas.DataFrame":
    import pandas as pd

    rows = [r for c in collections for r in c.rows]
    if len(collections) > 1:
        kinds = {c.kind for c in collections}
        rows.append(sum_rows(ALL, TOTAL, kinds.pop() if len(kinds) == 1 else "mixed", "",
                             [r for r in rows if r["table"] == TOTAL]))
    df = pd.DataFrame(rows, columns=COLUMNS)
    for c in INT_COLUMNS:
        df[c] = df[c].astype("Int64")
    df["mean_dim"] = df["mean_dim"].astype(float)
    df["compression_ratio"] = df["compression_ratio"].astype(float)
    return df
