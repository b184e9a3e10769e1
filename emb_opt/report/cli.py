"""The report CLI: ``python -m emb_opt.report CHECKPOINT [--out DIR] [--optimizer NAME]`` (see ``--help``)."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Optional, Sequence

from emb_opt.checkpoint_files import load_checkpoint
from emb_opt.config import parse_optimizer
from emb_opt.report.discovery import collect
from emb_opt.report.rows import MAIN_COLUMNS, report_frame

_HELP = """\
Report where the embedding memory of a checkpoint went: per table weights, optimizer state, index overhead
and utility bytes, bytes before (full dense tables) and after, compression ratio, and the histogram of
per-row dimensions. Writes memory_report.csv, memory_report.json and memory_report.png, and, when a FIITED
collection carries telemetry, telemetry.png (telemetry_<module>.png for several), telemetry.json, telemetry.csv.

CHECKPOINT is a file written by torch.save (or emb_opt.save_checkpoint) of a state_dict (model.state_dict()),
or of a dict holding one under a 'model', 'state_dict' or 'model_state_dict' key. It is read with
torch.load(weights_only=True): tensors, numbers, strings and plain containers only, so opening a file runs no
code from it; a file that needs more (a whole pickled module) is refused, saying so."""


def _optimizer_argument(text: str) -> str:
    try:
        return parse_optimizer(text).value
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emb_opt.report", description=_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="file written by torch.save (see above)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default: <checkpoint without its extension>_report, beside the checkpoint, so "
                        "the reports of two checkpoints in one folder do not overwrite each other)")
    p.add_argument("--optimizer", default="rowwise_adagrad", type=_optimizer_argument,
                   help="optimizer state assumed for dense/hashed tables: rowwise_adagrad (default), adagrad, sgd")
    return p


def _fail(message: str) -> int:
    print(f"python -m emb_opt.report: error: {message}", file=sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        return _fail(f"checkpoint not found: {args.checkpoint}")
    try:
        parse_optimizer(args.optimizer)
        obj = load_checkpoint(args.checkpoint)
    except Exception as error:  # noqa: BLE001 -- any load failure is the user's file, reported plainly
        return _fail(f"cannot load {args.checkpoint}: {type(error).__name__}: {error}")
    try:
        collections = collect(obj, args.optimizer)
    except (TypeError, ValueError) as error:
        return _fail(f"{args.checkpoint}: {error}")
    from emb_opt.report.plots import plot_memory_report, plot_telemetry, telemetry_frame

    out = args.out or os.path.splitext(os.path.abspath(args.checkpoint))[0] + "_report"
    os.makedirs(out, exist_ok=True)
    df = report_frame(collections)
    written = [os.path.join(out, f"memory_report.{ext}") for ext in ("csv", "json", "png")]
    df.to_csv(written[0], index=False)
    df.to_json(written[1], orient="records", indent=2)
    plot_memory_report(df, written[2])
    with_telemetry = [c for c in collections if c.telemetry]
    telemetry = {c.module: c.telemetry for c in with_telemetry}
    for c in with_telemetry:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", c.module) or "root"
        name = "telemetry.png" if len(with_telemetry) == 1 else f"telemetry_{safe}.png"
        written.append(plot_telemetry(c.telemetry, os.path.join(out, name), chunk_size=c.rows[0]["chunk_size"]))
    if telemetry:
        with open(os.path.join(out, "telemetry.json"), "w") as f:
            json.dump(telemetry, f, indent=1, default=float)
        telemetry_frame(telemetry).to_csv(os.path.join(out, "telemetry.csv"), index=False)
        written += [os.path.join(out, "telemetry.json"), os.path.join(out, "telemetry.csv")]
    import pandas as pd

    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_rows", 500):
        print(df[MAIN_COLUMNS].to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    print("\nwrote " + ", ".join(written))
    return 0
