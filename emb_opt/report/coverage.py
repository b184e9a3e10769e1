"""Which lookups a FIITED collection serves from stored chunks: per feature, over batches a user gives (held-out
data, typically), the share of id lookups whose row holds chunks, the share that read the whole row, and the
mean width read.

Why: a FIITED budget is spent on the rows training earned, and an id whose row holds no chunk reads zeros (or a
shared fallback row, ``FiitedConfig.fallback_rows``). ``memory_report`` says where the bytes went; this says
what the data then reads -- on held-out data, which features mostly miss (new users, unseen crosses) and so
gain nothing from the bytes their table holds. Nothing in the collection changes (no admission, no counters).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, List

import torch

from cuda_ext.layout import pack_row_key

if TYPE_CHECKING:
    import pandas

COVERAGE_COLUMNS = ["feature", "table", "lookups", "stored_share", "full_width_share", "mean_dim"]


def lookup_coverage(collection: Any, features: Iterable[Any]) -> "pandas.DataFrame":
    """Per feature of ``collection`` (a ``FiitedEmbeddingBagCollection`` or ``RowPruningEmbeddingBagCollection``,
    or an inference export of one), over the ``KeyedJaggedTensor``s ``features``: ``lookups`` (ids read),
    ``stored_share`` (of them, ids whose row holds >= 1 chunk), ``full_width_share`` (rows holding all their
    chunks) and ``mean_dim`` (floats read per lookup, zeros for the rest). Features a KJT lacks add nothing;
    an id outside its table raises ``ValueError`` naming the feature and the id.

    Example::

        coverage = lookup_coverage(model.sparse_arch.embedding_bag_collection, (b.sparse_features for b in held_out))
    """
    import pandas as pd

    store = getattr(collection, "store", None)
    if store is None or not hasattr(store, "lookup_rows"):
        raise TypeError(f"lookup_coverage takes a FIITED / row-pruning collection or its inference export, got "
                        f"{type(collection).__name__} (a wrapped collection: pass the features it gives the inner one)")
    tables = collection.embedding_bag_configs()
    chunk = store.pool_weights.shape[1]
    table_of: Dict[str, int] = {f: i for i, t in enumerate(tables) for f in t.feature_names}
    totals: Dict[str, List[float]] = {f: [0, 0, 0, 0.0] for f in table_of}
    with torch.no_grad():
        for kjt in features:
            for feature in kjt.keys():
                if feature not in table_of:
                    continue
                t = table_of[feature]
                ids = kjt[feature].values().to(torch.int64)
                rows = tables[t].num_embeddings
                bad = (ids < 0) | (ids >= rows)
                if bool(bad.any()):
                    raise ValueError(f"feature {feature!r} (table {tables[t].name!r}): id {int(ids[bad][0])} is out "
                                     f"of range [0, {rows})")
                keys = pack_row_key(torch.full_like(ids, t), ids).to(store.entry_keys.device)
                live = (store.lookup_rows(keys)[1] >= 0).sum(1)
                whole = tables[t].embedding_dim // chunk
                total = totals[feature]
                total[0] += ids.numel()
                total[1] += int((live > 0).sum())
                total[2] += int((live >= whole).sum())
                total[3] += float(live.sum()) * chunk
    out = [{"feature": f, "table": tables[table_of[f]].name, "lookups": int(n),
            "stored_share": hit / n if n else float("nan"), "full_width_share": full / n if n else float("nan"),
            "mean_dim": width / n if n else float("nan")} for f, (n, hit, full, width) in totals.items()]
    return pd.DataFrame(out, columns=COVERAGE_COLUMNS)
