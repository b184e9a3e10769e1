"""Where the embedding memory went: a per-table byte report of FIITED, dense and hashed collections.

``memory_report(obj)`` takes a ``FiitedEmbeddingBagCollection``, a TorchRec ``EmbeddingBagCollection`` /
``FusedEmbeddingBagCollection``, a ``hashing.HashedEmbeddingBagCollection`` or
``hashing.FrequencyVocabularyEmbeddingBagCollection``, any module containing them (a
DLRM: one block of rows per collection, ``module`` = its qualified name), or a state_dict of any of these
(``model.state_dict()``, or ``torch.load`` of a checkpoint). It returns one row per table, plus per collection
a ``(shared)`` row and a ``TOTAL`` row (and an overall ``TOTAL`` with module ``(all)`` when there are several
collections). Why this shape: the product promise is "X bytes instead of Y"; a user must be able to see
which table pays for what, and the numbers must add up to what the store really allocated.

FIITED accounting. A table pays, per live chunk, for its slot: the chunk (``pool_weights``), its optimizer
state (``pool_state``, Adagrad) and its utility (``slot_utility``); and per stored row for its index entry
(``entry_keys``, ``entry_first``, ``entry_chunks``), its optimizer state (``entry_state``, row-wise Adagrad) and its
share of the hash buckets (``floor(rows_t x bucket bytes / entries)``).
Everything else -- free slots and entries, holes left by rows that grew, the buckets' remainder, the count-min
sketch, per-table metadata, counters, and the collection's feature layout (metadata) -- is the ``(shared)`` row,
so the rows of a collection add up exactly to ``memory_bytes()`` (every buffer of the collection), category by
category to ``store.allocated_bytes()`` plus the layout's metadata. ``full_bytes`` is the dense fp32 table plus the dense optimizer
state of the collection's optimizer (FIITED: its own; dense / hashed: the ``optimizer`` argument, or the
fused optimizer's real state for a ``FusedEmbeddingBagCollection``); ``compression_ratio = full / total``.

``dims_histogram`` counts *virtual* rows by the dimension they read: ``"0:9520 16:300 32:120"`` (dim 0 = rows
without any chunk). A hashed table's virtual rows all read a full (shared) vector; ``physical_rows`` says how
many vectors are stored. From a bare state_dict a hashed collection is indistinguishable from a dense EBC
(its transform has no state): it is reported as the dense ``<prefix>.collection``. A
``hashing.FrequencyVocabularyEmbeddingBagCollection`` (kind ``freqvocab``) is reported like a hashed one, plus its
id -> row map: each table's sorted id array is that table's ``index_bytes``; all its out-of-vocabulary ids read
the shared OOV row, so its virtual rows all read a full vector too. Its state_dict carries the id arrays
(``<prefix>.transforms.<n>.vocabulary_<i>``), so one is reported as ``freqvocab`` from a state_dict as well (its
virtual rows then unknown: the physical ones).

``lookup_coverage(collection, kjts)`` (``coverage``) is the other side: per feature, which share of some data's
lookups read stored chunks, and how wide.

The package: ``rows`` (the row model and the DataFrame), ``accounting`` (the rows of one collection),
``discovery`` (``memory_report``: finding the collections), ``plots`` (figures), ``cli`` (``python -m
emb_opt.report CHECKPOINT [--out DIR] [--optimizer NAME]``, see ``--help``).
"""
from emb_opt.report.coverage import COVERAGE_COLUMNS, lookup_coverage
from emb_opt.report.discovery import collect, memory_report, unwrap_checkpoint
from emb_opt.report.rows import (
    ALL, BYTE_COLUMNS, COLUMNS, INT_COLUMNS, MAIN_COLUMNS, SHARED, TOTAL, CollectionReport, format_histogram,
    parse_histogram, report_frame,
)
from emb_opt.report.cli import main

__all__ = ["memory_report", "lookup_coverage", "COVERAGE_COLUMNS", "collect", "unwrap_checkpoint", "report_frame",
           "CollectionReport", "COLUMNS", "BYTE_COLUMNS", "INT_COLUMNS", "MAIN_COLUMNS", "SHARED", "TOTAL", "ALL", "format_histogram",
           "parse_histogram", "main"]
