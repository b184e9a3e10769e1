"""Semantic IDs for item-id features: codes from content embeddings, ID parameterizations, TorchRec integration.

* Codes: ``build_codes(content_emb [n, D], levels, codebook_size, method="rqvae"|"rqkmeans") -> LongTensor [n, L]``
  with the quantizers ``RQVAE`` and ``RQKMeans``; ``save_quantizer``/``load_quantizer``, ``save_codes``/
  ``load_codes``, ``quantize`` (new items, same codebooks), ``collision_report``.
* Parameterizations (one table of H rows, tokens sum-pooled): ``random_hash_tokens``, ``individual_tokens``,
  ``ngram_tokens`` (trigram/fourgram), ``all_bigram_tokens``, ``unigram_tokens``, ``prefix_ngram_tokens`` (Meta's
  ``p_i = sum_{t<=i} K^{i-t}(c_t + 1) - 1``), ``parameterization_tokens`` (dispatch by name).
* TorchRec: ``SemanticIdTransform(codes, feature, parameterization="prefix_ngram", num_buckets=H)`` (KJT -> KJT),
  ``semantic_id_pair`` and ``SemanticIdEmbeddingBagCollection`` (transform + EBC, drop-in for DLRM).
* Content embeddings of item text: ``MiniLMEncoder`` (all-MiniLM-L6-v2 in plain torch: ``from_directory`` /
  ``from_files``, ``encode(texts) -> [N, 384]``), with ``WordPieceTokenizer``, ``BertEncoder`` and
  ``read_safetensors`` / ``write_safetensors``.
See ``DESIGN.md`` section 3 for the papers and formulas.
"""
from semantic_id.codes import (
    CodesTable,
    CollisionReport,
    build_codes,
    collision_report,
    dense_codes_table,
    fit_quantizer,
    load_codes,
    load_quantizer,
    quantize,
    save_codes,
    save_quantizer,
)
from semantic_id.kmeans import kmeans
from semantic_id.minilm import (
    BertConfig,
    BertEncoder,
    MiniLMEncoder,
    WordPieceTokenizer,
    read_safetensors,
    write_safetensors,
)
from semantic_id.parameterizations import (
    CODE_PARAMETERIZATIONS,
    ID_PARAMETERIZATIONS,
    PARAMETERIZATIONS,
    TokenPlan,
    all_bigram_tokens,
    apply_plan,
    apply_plan_numpy,
    individual_tokens,
    ngram_tokens,
    parameterization_space,
    parameterization_tokens,
    prefix_ngram_tokens,
    random_hash_tokens,
    token_plan,
    tokens_per_id,
    unigram_tokens,
)
from semantic_id.rq_kmeans import RQKMeans
from semantic_id.rq_vae import RQVAE

__all__ = [
    "build_codes",
    "fit_quantizer",
    "quantize",
    "save_quantizer",
    "load_quantizer",
    "save_codes",
    "load_codes",
    "dense_codes_table",
    "CodesTable",
    "collision_report",
    "CollisionReport",
    "RQVAE",
    "RQKMeans",
    "kmeans",
    "MiniLMEncoder",
    "WordPieceTokenizer",
    "BertEncoder",
    "BertConfig",
    "read_safetensors",
    "write_safetensors",
    "PARAMETERIZATIONS",
    "CODE_PARAMETERIZATIONS",
    "ID_PARAMETERIZATIONS",
    "TokenPlan",
    "token_plan",
    "apply_plan",
    "apply_plan_numpy",
    "parameterization_space",
    "parameterization_tokens",
    "tokens_per_id",
    "prefix_ngram_tokens",
    "ngram_tokens",
    "all_bigram_tokens",
    "unigram_tokens",
    "random_hash_tokens",
    "individual_tokens",
    "SemanticIdTransform",
    "UNKNOWN_ID_POLICIES",
    "SemanticIdEmbeddingBagCollection",
    "semantic_id_pair",
]

# The TorchRec pieces are imported when first asked for, so codes, quantizers and parameterizations import on a
# machine without TorchRec (the GPU machines, which run the kernel tests).
_TORCHREC_EXPORTS = {
    "SemanticIdTransform": "semantic_id.transform",
    "UNKNOWN_ID_POLICIES": "semantic_id.transform",
    "SemanticIdEmbeddingBagCollection": "semantic_id.ebc",
    "semantic_id_pair": "semantic_id.ebc",
}


def __getattr__(name: str):
    if name in _TORCHREC_EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_TORCHREC_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'semantic_id' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_TORCHREC_EXPORTS))
