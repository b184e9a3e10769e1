"""PNG figures of ``emb_opt.memory_report`` and of a FIITED collection's telemetry (matplotlib, Agg).

* ``plot_memory_report(df, path)``: (a) per table a stacked bar of its bytes by category (weights, optimizer
  state, index, utility, metadata) next to the bytes of the full dense table, on a log axis, one line per
  table so that 26 Criteo tables stay readable; (b) the histogram of per-row dimensions over all tables (how
  many virtual rows read 0, c, 2c, ... floats), log y. The title gives total, full and overall compression.
* ``plot_telemetry(telemetry, path)``: from the records of ``FiitedEmbeddingBagCollection.telemetry`` (one per
  resize): live chunks / capacity and allocated bytes over steps, the threshold of each chunk position over
  steps, and the rows holding k chunks (summed over tables) as a stacked area over steps.
* ``telemetry_frame(telemetry)``: the same records flattened into a table (one row per resize) for CSV.

Figures read only the DataFrame / the records, so a report re-loaded from its CSV plots the same way.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Sequence, Union

from emb_opt.report.rows import ALL, BYTE_COLUMNS, SHARED, TOTAL, parse_histogram

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

_CATEGORY_COLORS = {"weights_bytes": "#4C72B0", "optimizer_bytes": "#DD8452", "index_bytes": "#55A868",
                    "utility_bytes": "#C44E52", "metadata_bytes": "#8172B3"}  # fmt: skip


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _totals(df: "pandas.DataFrame") -> "pandas.DataFrame":
    """The overall total row(s): ``(all)`` when present, else every collection's TOTAL."""
    totals = df[df["table"] == TOTAL]
    overall = totals[totals["module"] == ALL]
    return overall if len(overall) else totals


def plot_memory_report(df: "pandas.DataFrame", path: str) -> str:
    """Write the memory report figure (see the module docstring) to ``path`` (PNG); returns ``path``."""
    needed = {"module", "table", "total_bytes", "full_bytes", "dims_histogram", *BYTE_COLUMNS}
    missing = needed - set(df.columns)
    if missing:
        raise ValueError(f"plot_memory_report: the DataFrame lacks column(s) {sorted(missing)}; "
                         "pass the result of memory_report(...)")
    bars = df[df["table"] != TOTAL]
    if bars.empty:
        raise ValueError("plot_memory_report: the report has no table rows")
    bars = bars[(bars["table"] != SHARED) | (bars["total_bytes"].fillna(0) > 0)]
    modules = bars["module"].unique()
    labels = [t if len(modules) == 1 else f"{m or '(root)'}: {t}" for m, t in zip(bars["module"], bars["table"])]
    totals = _totals(df)
    total, full = float(totals["total_bytes"].sum()), float(totals["full_bytes"].sum())
    plt = _pyplot()
    n = len(bars)
    upper = max(2.5, 0.32 * n)
    height = upper + 4.2
    fig = plt.figure(figsize=(11, height))
    grid = fig.add_gridspec(2, 1, height_ratios=[upper, 2.6], hspace=2.2 / (upper + 2.6),
                            top=1 - 0.75 / height, bottom=0.6 / height)
    ax = fig.add_subplot(grid[0])
    y = list(range(n))
    left = [0.0] * n
    for column, color in _CATEGORY_COLORS.items():
        values = [float(v) if v == v else 0.0 for v in bars[column].fillna(0)]
        ax.barh([i - 0.19 for i in y], values, left=left, height=0.38, color=color,
                label=column.replace("_bytes", ""))
        left = [a + b for a, b in zip(left, values)]
    fulls = [float(v) for v in bars["full_bytes"].fillna(0)]
    ax.barh([i + 0.19 for i in y], fulls, height=0.38, color="#BBBBBB", hatch="//", edgecolor="#777777",
            label="full dense table + optimizer")
    for i, (used, whole) in enumerate(zip(left, fulls)):
        ax.annotate(human_bytes(used), (used, i - 0.19), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize=7)
        if used and whole:
            ax.annotate(f"{whole / used:.1f}x", (whole, i + 0.19), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=7)
    ax.set_xscale("log")
    positive = [v for column in _CATEGORY_COLORS for v in bars[column].fillna(0) if v > 0] + [v for v in fulls if v > 0]
    ax.set_xlim(min(positive, default=1.0) / 2, max(positive, default=1.0) * 4)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8 if n <= 30 else 6)
    ax.invert_yaxis()
    ax.set_xlabel("bytes (log)")
    ax.grid(axis="x", which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("(a) bytes per table by category, next to the full table")
    hist: Dict[int, int] = {}
    for text in df.loc[~df["table"].isin([TOTAL, SHARED]), "dims_histogram"]:
        for dim, count in parse_histogram(text).items():
            hist[dim] = hist.get(dim, 0) + count
    bx = fig.add_subplot(grid[1])
    if hist:
        dims = sorted(hist)
        positions = range(len(dims))
        bx.bar(positions, [hist[d] for d in dims], color="#4C72B0")
        bx.set_xticks(list(positions))
        bx.set_xticklabels([str(d) for d in dims], fontsize=8)
        bx.set_yscale("log")
        for x, d in zip(positions, dims):
            bx.annotate(f"{hist[d]:,}", (x, hist[d]), ha="center", va="bottom", fontsize=7)
    bx.set_xlabel("live dimension of a row (floats; 0 = no chunk stored)")
    bx.set_ylabel("virtual rows (log)")
    bx.set_title("(b) rows per live dimension, all tables")
    ratio = full / total if total else math.inf
    fig.suptitle(f"embedding memory: {human_bytes(total)} allocated, full tables {human_bytes(full)}, "
                 f"compression {ratio:.2f}x", fontsize=12, y=1 - 0.2 / height)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _check_telemetry(telemetry: Sequence[Mapping[str, Any]]) -> None:
    if not telemetry:
        raise ValueError("plot_telemetry: the telemetry is empty -- no resize step has run yet "
                         "(resizes start after warmup_steps training steps)")
    needed = {"step", "live_chunks", "capacity", "allocated_bytes", "thresholds", "rows_by_chunks"}
    missing = needed - set(telemetry[0])
    if missing:
        raise ValueError(f"plot_telemetry: records lack {sorted(missing)}; "
                         "expected the records of FiitedEmbeddingBagCollection.telemetry")


def _rows_by_chunks(record: Mapping[str, Any], max_chunks: int) -> List[int]:
    """Rows holding exactly k = 1..max_chunks chunks, summed over tables."""
    out = [0] * max_chunks
    for counts in record["rows_by_chunks"].values():
        for k, n in enumerate(counts):
            out[k] += int(n)
    return out


def plot_telemetry(telemetry: Sequence[Mapping[str, Any]], path: str, chunk_size: Union[int, None] = None) -> str:
    """Write the telemetry figure (see the module docstring) to ``path`` (PNG); returns ``path``.

    ``chunk_size`` only labels chunk counts with their dimension.
    """
    plt = _pyplot()
    fig = telemetry_figure(telemetry, chunk_size)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def telemetry_figure(telemetry: Sequence[Mapping[str, Any]], chunk_size: Union[int, None] = None) -> "Figure":
    """The telemetry figure of ``plot_telemetry``, not yet saved. Counts and bytes are plotted from zero without
    an axis offset (a wobble of a few bytes stays small); a single resize is drawn as bars and points."""
    _check_telemetry(telemetry)
    plt = _pyplot()
    steps = [int(r["step"]) for r in telemetry]
    fig, (ax, tx, rx) = plt.subplots(3, 1, figsize=(10, 11), sharex=True)
    ax.plot(steps, [r["live_chunks"] for r in telemetry], marker="o", label="live chunks")
    ax.plot(steps, [r["capacity"] for r in telemetry], marker=".", linestyle="--", label="allocated slots")
    ax.set_ylabel("chunk slots")
    bx = ax.twinx()
    bx.plot(steps, [r["allocated_bytes"] for r in telemetry], color="#C44E52", marker="x", label="allocated bytes")
    bx.set_ylabel("allocated bytes")
    for axis in (ax, bx):
        axis.ticklabel_format(axis="y", style="plain", useOffset=False)
        axis.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + bx.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="best")
    ax.set_title("live chunks and allocated memory per resize")
    max_chunks = max(len(r["thresholds"]) for r in telemetry)
    positive = []
    for k in range(max_chunks):
        values = [float(r["thresholds"][k]) if k < len(r["thresholds"]) else math.nan for r in telemetry]
        values = [v if math.isfinite(v) else math.nan for v in values]
        positive += [v for v in values if v > 0]
        tx.plot(steps, values, marker=".", label=f"chunk {k}")
    if positive:
        tx.set_yscale("symlog", linthresh=min(positive))
    tx.set_ylabel("utility threshold")
    tx.set_title("admission threshold per chunk position (0 = everything fits)")
    tx.legend(fontsize=7, ncol=min(8, max_chunks), loc="best")
    width = max(max((len(c) for c in r["rows_by_chunks"].values()), default=0) for r in telemetry)
    if width:
        stacks = list(zip(*[_rows_by_chunks(r, width) for r in telemetry]))
        names = [f"{k} chunk{'s' if k > 1 else ''}" + (f" (dim {k * chunk_size})" if chunk_size else "")
                 for k in range(1, width + 1)]
        if len(steps) > 1:
            rx.stackplot(steps, *stacks, labels=names, alpha=0.85)
        else:  # one resize: an area over a single step has no width
            bottom = 0
            for stack, name in zip(stacks, names):
                rx.bar(steps, stack, bottom=bottom, label=name, alpha=0.85)
                bottom += stack[0]
        rx.legend(fontsize=7, loc="upper left", ncol=min(4, width))
    rx.set_ylabel("rows (all tables)")
    rx.set_xlabel("training step")
    rx.set_title("rows by number of live chunks (rows with none not shown)")
    from matplotlib.ticker import MaxNLocator

    rx.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


Records = Sequence[Mapping[str, Any]]


def telemetry_frame(telemetry: Union[Records, Mapping[str, Records]]) -> "pandas.DataFrame":
    """Telemetry records (one collection's list, or module -> list) as one row per resize, for CSV."""
    import pandas as pd

    per_module = telemetry if isinstance(telemetry, Mapping) else {"": telemetry}
    rows = []
    for module, records in per_module.items():
        for r in records:
            row: Dict[str, Any] = {"module": module}
            row.update({k: r[k] for k in ("step", "live_chunks", "capacity", "allocated_bytes", "pruned") if k in r})
            row.update({f"threshold_{k}": v for k, v in enumerate(r.get("thresholds", []))})
            width = max((len(c) for c in r.get("rows_by_chunks", {}).values()), default=0)
            row.update({f"rows_{k + 1}_chunks": n for k, n in enumerate(_rows_by_chunks(r, width))})
            row.update({f"live_chunks_{t}": n for t, n in r.get("live_chunks_per_table", {}).items()})
            rows.append(row)
    return pd.DataFrame(rows)
