"""Sentence embeddings with all-MiniLM-L6-v2 (a 6-layer BERT) in plain PyTorch: item text -> content embedding.

Semantic IDs are built from content embeddings of items; for a catalog with titles the usual choice is a small
sentence encoder. This module runs one without the ``transformers`` / ``sentence-transformers`` / ``safetensors``
packages, from the files of a sentence-transformers model folder:

* ``read_safetensors(bytes)``: the safetensors format (8-byte little-endian header length, a JSON header
  ``{name: {dtype, shape, data_offsets}}``, raw little-endian tensor bytes). Header, dtypes, shapes and offsets are
  validated against the buffer: a bad file is a ``ValueError`` naming the tensor; nothing is unpickled.
* ``WordPieceTokenizer``: BERT's tokenizer from ``vocab.txt`` (clean, lowercase, strip accents, split on
  whitespace and punctuation, greedy longest-match-first word pieces with ``##`` continuations, ``[UNK]``,
  ``[CLS] ... [SEP]``).
* ``BertEncoder``: the BERT encoder (absolute position and token type embeddings, post-LayerNorm layers) with the
  parameter names of the Hugging Face checkpoints, so ``model.safetensors`` loads as a state dict.
* ``MiniLMEncoder``: tokenizer + encoder + pooling (``1_Pooling/config.json``: mean over real tokens) + L2
  normalisation (``modules.json``: ``Normalize``); ``encode(texts) -> [N, hidden]``.

Files are untrusted input: every JSON file, the vocabulary and the weights are checked, and an inconsistency is
a ``ValueError`` naming the file and what is wrong.
"""
from __future__ import annotations

import json
import math
import os
import struct
import sys
import unicodedata
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------- safetensors
SAFETENSORS_DTYPES: Dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation's limit


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def read_safetensors(data: Union[bytes, bytearray, memoryview], source: str = "safetensors"
                     ) -> Dict[str, torch.Tensor]:
    """Tensors of a safetensors file's bytes, each a CPU tensor that owns a copy of its data.

    Checks: the header length fits the buffer; the header is a UTF-8 JSON object; every entry (but
    ``__metadata__``, a str -> str map) has a known ``dtype``, a ``shape`` of non-negative integers and
    ``data_offsets`` ``[begin, end]`` inside the data buffer whose length matches dtype x shape; no two tensors
    overlap. Anything else is a ``ValueError`` naming ``source`` and the tensor.

    Args:
        data (bytes): the whole file.
        source (str): a name for error messages (the file name).

    Example::

        tensors = read_safetensors(open("model.safetensors", "rb").read(), "model.safetensors")
    """
    if sys.byteorder != "little":
        raise RuntimeError("read_safetensors needs a little-endian machine (safetensors stores little-endian)")
    view = memoryview(data)
    if len(view) < 8:
        raise ValueError(f"{source}: {len(view)} bytes, too short for the 8-byte safetensors header length")
    (header_length,) = struct.unpack("<Q", view[:8])
    if header_length > MAX_HEADER_BYTES or 8 + header_length > len(view):
        raise ValueError(f"{source}: header length {header_length} does not fit the file of {len(view)} bytes")
    try:
        header = json.loads(bytes(view[8 : 8 + header_length]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{source}: the header is not UTF-8 JSON ({error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{source}: the header must be a JSON object, got {type(header).__name__}")
    buffer = view[8 + header_length :]
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise ValueError(f"{source}: __metadata__ must be a map of strings to strings")
    spans: List[Tuple[int, int, str]] = []
    tensors: Dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        where = f"{source}: tensor {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{where}: entry must be an object with exactly dtype, shape and data_offsets, got "
                             f"{entry!r:.200}")
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
        if dtype is None:
            raise ValueError(f"{where}: unsupported dtype {entry['dtype']!r} (known: {', '.join(SAFETENSORS_DTYPES)})")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise ValueError(f"{where}: shape must be a list of non-negative integers, got {shape!r:.200}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= len(buffer)):
            raise ValueError(f"{where}: data_offsets {offsets!r:.200} are not [begin, end] with "
                             f"0 <= begin <= end <= {len(buffer)} (the data buffer's size)")
        begin, end = offsets
        expected = math.prod(shape) * _element_size(dtype)
        if end - begin != expected:
            raise ValueError(f"{where}: {entry['dtype']} {shape} needs {expected} bytes, data_offsets span "
                             f"{end - begin}")
        spans.append((begin, end, name))
        if expected == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            raw = bytearray(buffer[begin:end])  # a copy: the tensor owns its memory
            tensors[name] = torch.frombuffer(raw, dtype=dtype).reshape(shape)
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0 and b1 < e1:
            raise ValueError(f"{source}: tensors {n0!r} [{b0}, {e0}) and {n1!r} [{b1}, {e1}) overlap")
    return tensors


def write_safetensors(tensors: Mapping[str, torch.Tensor], metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """The safetensors bytes of ``tensors`` (contiguous, in name order), e.g. to write a small model in tests."""
    header: Dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    chunks, offset = [], 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        if tensor.dtype not in _DTYPE_NAMES:
            raise ValueError(f"tensor {name!r}: dtype {tensor.dtype} has no safetensors name")
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": _DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # aligned data, as the reference writer pads
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks)


# ---------------------------------------------------------------------------------------------------- tokenizer
def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def _is_punctuation(char: str) -> bool:
    cp = ord(char)  # BERT counts all non-letter/number ASCII as punctuation ("$", "^", "`")
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


class WordPieceTokenizer:
    """BERT's uncased tokenizer (basic tokenization + WordPiece) over a ``vocab.txt`` vocabulary.

    Basic tokenization removes control characters, puts spaces around CJK characters, lowercases and strips
    accents (NFD, combining marks dropped), and splits on whitespace and punctuation. Each word is then split
    greedily into the longest vocabulary pieces, continuations prefixed ``##``; a word that cannot be split (or is
    longer than ``max_chars_per_word``) becomes ``[UNK]``. ``encode`` adds ``[CLS]`` / ``[SEP]`` and truncates to
    ``max_length`` ids.

    Args:
        vocab (Sequence[str]): the tokens; token ``i`` has id ``i`` (the lines of ``vocab.txt``).
        lowercase (bool): lowercase the text (uncased models).
        strip_accents (Optional[bool]): drop accents; None: as ``lowercase`` (BERT's rule).
        max_length (int): ids per text including ``[CLS]`` and ``[SEP]``.
        max_chars_per_word (int): longer words are ``[UNK]``.

    Example::

        tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "!"])
        tokenizer.tokenize("Unaffable!")   # ["un", "##aff", "##able", "!"]
        tokenizer.encode("Unaffable!")     # [2, 4, 5, 6, 7, 3]
    """

    SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")

    def __init__(self, vocab: Sequence[str], lowercase: bool = True, strip_accents: Optional[bool] = None,
                 max_length: int = 256, max_chars_per_word: int = 100) -> None:
        self.vocab: Dict[str, int] = {}
        for index, token in enumerate(vocab):
            self.vocab.setdefault(token, index)
        missing = [t for t in self.SPECIAL if t not in self.vocab]
        if missing:
            raise ValueError(f"vocabulary has no {', '.join(missing)} token(s)")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 ([CLS] and [SEP]), got {max_length}")
        self.size = len(vocab)
        self.lowercase = lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.max_length = max_length
        self.max_chars_per_word = max_chars_per_word
        self.pad_id, self.unk_id, self.cls_id, self.sep_id = (self.vocab[t] for t in self.SPECIAL)

    @classmethod
    def from_vocab_text(cls, text: str, **kwargs: Any) -> "WordPieceTokenizer":
        """From the contents of ``vocab.txt`` (one token a line)."""
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls([line.rstrip("\r") for line in lines], **kwargs)

    def basic_tokenize(self, text: str) -> List[str]:
        """Words and punctuation marks of ``text``, normalised as the model was trained."""
        cleaned = []
        for char in text:
            cp = ord(char)
            if cp == 0 or cp == 0xFFFD or _is_control(char):
                continue
            if _is_cjk(cp):
                cleaned.append(f" {char} ")
            else:
                cleaned.append(" " if _is_whitespace(char) else char)
        words = []
        for word in "".join(cleaned).split():
            if self.lowercase:
                word = word.lower()
            if self.strip_accents:
                word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
            current = ""
            for char in word:
                if _is_punctuation(char):
                    if current:
                        words.append(current)
                    words.append(char)
                    current = ""
                else:
                    current += char
            if current:
                words.append(current)
        return words

    def wordpiece(self, word: str) -> List[str]:
        """Greedy longest-match-first pieces of one word; ``["[UNK]"]`` when it cannot be covered."""
        if len(word) > self.max_chars_per_word:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> List[str]:
        """The word pieces of ``text`` (no special tokens, no truncation)."""
        return [piece for word in self.basic_tokenize(text) for piece in self.wordpiece(word)]

    def encode(self, text: str) -> List[int]:
        """``[CLS] pieces [SEP]`` as ids, the pieces truncated so the whole fits ``max_length``."""
        ids = [self.vocab.get(piece, self.unk_id) for piece in self.tokenize(text)]
        return [self.cls_id] + ids[: self.max_length - 2] + [self.sep_id]

    def batch(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(input ids, attention mask), both ``[B, T]`` int64, padded with ``[PAD]`` to the longest text."""
        encoded = [self.encode(text) for text in texts]
        width = max((len(e) for e in encoded), default=2)
        ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(encoded), width), dtype=torch.int64)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e, dtype=torch.int64)
            mask[row, : len(e)] = 1
        return ids, mask


# ---------------------------------------------------------------------------------------------------- encoder
ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclass
class BertConfig:
    """The fields of a BERT ``config.json`` the encoder uses."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], source: str = "config.json") -> "BertConfig":
        """Validated config: positive integer sizes, heads dividing the hidden size, a known activation, absolute
        positions. ``ValueError`` naming ``source`` and the field otherwise."""
        if not isinstance(config, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(config).__name__}")
        values: Dict[str, Any] = {}
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            if name not in config and name != "type_vocab_size":
                raise ValueError(f"{source}: missing {name}")
            value = config.get(name, 2)
            if type(value) is not int or value < 1:
                raise ValueError(f"{source}: {name} must be a positive integer, got {value!r}")
            values[name] = value
        if values["hidden_size"] % values["num_attention_heads"]:
            raise ValueError(f"{source}: hidden_size {values['hidden_size']} is not divisible by "
                             f"num_attention_heads {values['num_attention_heads']}")
        act = config.get("hidden_act", "gelu")
        if act not in ACTIVATIONS:
            raise ValueError(f"{source}: hidden_act {act!r} is not supported ({', '.join(ACTIVATIONS)})")
        eps = config.get("layer_norm_eps", 1e-12)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"{source}: layer_norm_eps must be a number in (0, 1), got {eps!r}")
        position = config.get("position_embedding_type", "absolute")
        if position != "absolute":
            raise ValueError(f"{source}: position_embedding_type {position!r} is not supported (absolute only)")
        return cls(hidden_act=act, layer_norm_eps=float(eps), **values)


class _Embeddings(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions)[None] + \
            self.token_type_embeddings.weight[0]  # one segment: token type 0 everywhere
        return self.LayerNorm(x)


class _Layer(nn.Module):
    """One post-LayerNorm transformer layer with the Hugging Face BERT parameter names."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        h, eps = c.hidden_size, c.layer_norm_eps
        self.heads = c.num_attention_heads
        self.activation = ACTIVATIONS[c.hidden_act]
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        self.attention.self.query, self.attention.self.key, self.attention.self.value = (nn.Linear(h, h)
                                                                                         for _ in range(3))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(h, h)
        self.attention.output.LayerNorm = nn.LayerNorm(h, eps=eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(h, c.intermediate_size)
        self.output = nn.Module()
        self.output.dense = nn.Linear(c.intermediate_size, h)
        self.output.LayerNorm = nn.LayerNorm(h, eps=eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        attn = self.attention.self
        q, k, v = (proj(x).view(B, T, self.heads, H // self.heads).transpose(1, 2)
                   for proj in (attn.query, attn.key, attn.value))
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # keep: [B, 1, 1, T] bool
        context = context.transpose(1, 2).reshape(B, T, H)
        x = self.attention.output.LayerNorm(x + self.attention.output.dense(context))
        hidden = self.activation(self.intermediate.dense(x))
        return self.output.LayerNorm(x + self.output.dense(hidden))


class BertEncoder(nn.Module):
    """BERT's encoder: token embeddings -> ``num_hidden_layers`` transformer layers -> ``[B, T, hidden]``.

    Parameter names follow the Hugging Face checkpoints (``embeddings.word_embeddings.weight``,
    ``encoder.layer.0.attention.self.query.weight``, ...), so ``load_weights`` takes a ``model.safetensors``.

    Args:
        config (BertConfig): sizes, activation and LayerNorm epsilon.

    Example::

        encoder = BertEncoder(BertConfig.from_dict(json.load(open("config.json"))))
        encoder.load_weights(read_safetensors(open("model.safetensors", "rb").read()))
        hidden = encoder(ids, mask)   # [B, T, hidden]
    """

    IGNORED_PREFIXES = ("pooler.", "embeddings.position_ids", "cls.")  # unused by sentence embeddings

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))

    def load_weights(self, tensors: Mapping[str, torch.Tensor], source: str = "model.safetensors") -> None:
        """Load a checkpoint's tensors (an optional ``bert.`` prefix is dropped; the pooler is ignored). Missing,
        unexpected or mis-shaped tensors are a ``ValueError`` naming them."""
        state = {(name[5:] if name.startswith("bert.") else name): t for name, t in tensors.items()}
        state = {name: t for name, t in state.items() if not name.startswith(self.IGNORED_PREFIXES)}
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"{source}: weights do not match the config: missing {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                             f"{' ...' if len(unexpected) > 5 else ''}")
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise ValueError(f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, the config needs "
                                 f"{tuple(own[name].shape)}")
            if not tensor.is_floating_point():
                raise ValueError(f"{source}: tensor {name!r} has dtype {tensor.dtype}, expected a float")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{source}: tensor {name!r} has NaN or inf values")
        # assign: the checkpoint's tensors become the parameters (no copy; works on a "meta"-device module)
        self.load_state_dict({name: t.float().contiguous() for name, t in state.items()}, assign=True)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, T, hidden]`` of token ids ``[B, T]``; ``mask`` ``[B, T]`` is 1 for real tokens
        (padding is never attended to)."""
        if ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"{ids.shape[1]} tokens exceed max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        keep = mask.bool()[:, None, None, :]
        x = self.embeddings(ids)
        for layer in self.encoder.layer:
            x = layer(x, keep)
        return x


# ---------------------------------------------------------------------------------------------------- sentence model
POOLING_MODES = ("mean", "cls", "max")
MODEL_FILES = ("config.json", "vocab.txt", "model.safetensors")
OPTIONAL_FILES = ("tokenizer_config.json", "special_tokens_map.json", "modules.json", "sentence_bert_config.json",
                  "1_Pooling/config.json")


def _json(files: Mapping[str, bytes], name: str, default: Any = None) -> Any:
    if name not in files:
        return default
    try:
        return json.loads(files[name].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{name}: not UTF-8 JSON ({error})") from None


def _pooling_mode(pooling: Any) -> str:
    if pooling is None:
        return "mean"
    if not isinstance(pooling, dict):
        raise ValueError("1_Pooling/config.json: expected a JSON object")
    modes = [m for m in ("mean_tokens", "cls_token", "max_tokens", "mean_sqrt_len_tokens")
             if pooling.get(f"pooling_mode_{m}")]
    names = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}
    if len(modes) != 1 or modes[0] not in names:
        raise ValueError(f"1_Pooling/config.json: exactly one of mean / cls / max pooling is supported, got "
                         f"{modes or 'none'}")
    return names[modes[0]]


def _max_length(files: Mapping[str, bytes], config: BertConfig) -> int:
    """``sentence_bert_config.json``'s ``max_seq_length`` (the length the model was trained with), else the
    tokenizer's ``model_max_length``, capped by the position embeddings."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        settings = _json(files, name, {})
        if not isinstance(settings, dict):
            raise ValueError(f"{name}: expected a JSON object")
        value = settings.get(key)
        if value is not None:
            if type(value) is not int or value < 2:
                raise ValueError(f"{name}: {key} must be an integer >= 2, got {value!r}")
            return min(value, config.max_position_embeddings)
    return min(512, config.max_position_embeddings)


class MiniLMEncoder(nn.Module):
    """A sentence-transformers BERT model (all-MiniLM-L6-v2) in plain PyTorch: texts -> unit-norm embeddings.

    Tokenizes with ``WordPieceTokenizer``, runs ``BertEncoder``, pools the real tokens' hidden states (mean for
    all-MiniLM-L6-v2, per ``1_Pooling/config.json``) and L2-normalises when ``modules.json`` lists a ``Normalize``
    module. Runs on CPU in float32 under ``torch.no_grad``; texts are batched by length so padding stays small.

    Args:
        tokenizer (WordPieceTokenizer): text -> ids.
        encoder (BertEncoder): ids -> hidden states, weights loaded.
        pooling (str): "mean" (over real tokens), "cls" or "max".
        normalize (bool): L2-normalise the pooled embedding.

    Example::

        model = MiniLMEncoder.from_directory("all-MiniLM-L6-v2")
        emb = model.encode(["Toy Story (1995). Genres: Animation, Children's, Comedy."])   # [1, 384]
    """

    def __init__(self, tokenizer: WordPieceTokenizer, encoder: BertEncoder, pooling: str = "mean",
                 normalize: bool = True) -> None:
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        if tokenizer.size > encoder.config.vocab_size:
            raise ValueError(f"vocab.txt has {tokenizer.size} tokens but the model embeds {encoder.config.vocab_size}")
        if tokenizer.max_length > encoder.config.max_position_embeddings:
            raise ValueError(f"tokenizer max_length {tokenizer.max_length} exceeds max_position_embeddings "
                             f"{encoder.config.max_position_embeddings}")
        self.tokenizer = tokenizer
        self.encoder = encoder.eval()
        self.pooling = pooling
        self.normalize = normalize

    @property
    def dim(self) -> int:
        return self.encoder.config.hidden_size

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> "MiniLMEncoder":
        """From a model folder's files as ``{relative name: bytes}``: ``config.json``, ``vocab.txt``,
        ``model.safetensors`` required; ``tokenizer_config.json``, ``sentence_bert_config.json``,
        ``modules.json``, ``1_Pooling/config.json`` read when present."""
        missing = [name for name in MODEL_FILES if name not in files]
        if missing:
            raise ValueError(f"model files missing: {', '.join(missing)} (have {', '.join(sorted(files)) or 'none'})")
        config = BertConfig.from_dict(_json(files, "config.json"))
        tokenizer_config = _json(files, "tokenizer_config.json", {})
        if not isinstance(tokenizer_config, dict):
            raise ValueError("tokenizer_config.json: expected a JSON object")
        lowercase = tokenizer_config.get("do_lower_case", True)
        strip_accents = tokenizer_config.get("strip_accents")
        if not isinstance(lowercase, bool) or not (strip_accents is None or isinstance(strip_accents, bool)):
            raise ValueError("tokenizer_config.json: do_lower_case must be true/false and strip_accents "
                             "true/false/null")
        try:
            vocab_text = files["vocab.txt"].decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"vocab.txt: not UTF-8 ({error})") from None
        try:
            tokenizer = WordPieceTokenizer.from_vocab_text(vocab_text, lowercase=lowercase, strip_accents=strip_accents,
                                                           max_length=_max_length(files, config))
        except ValueError as error:
            raise ValueError(f"vocab.txt: {error}") from None
        modules = _json(files, "modules.json", [])
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise ValueError("modules.json: expected a list of objects")
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        with torch.device("meta"):  # nothing is allocated from the config's sizes before the weights match them
            encoder = BertEncoder(config)
        encoder.load_weights(read_safetensors(files["model.safetensors"], "model.safetensors"))
        return cls(tokenizer, encoder, _pooling_mode(_json(files, "1_Pooling/config.json")), normalize)

    @classmethod
    def from_directory(cls, path: Union[str, os.PathLike]) -> "MiniLMEncoder":
        """From a sentence-transformers model folder (the files ``from_files`` reads)."""
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: no such model folder")
        files = {}
        for name in MODEL_FILES + OPTIONAL_FILES:
            full = os.path.join(path, *name.split("/"))
            if os.path.isfile(full):
                with open(full, "rb") as handle:
                    files[name] = handle.read()
        try:
            return cls.from_files(files)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings ``[B, hidden]`` of a padded batch (ids and mask ``[B, T]``)."""
        hidden = self.encoder(ids, mask)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "mean":
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = hidden.masked_fill(weights == 0, float("-inf")).max(1).values
        return F.normalize(pooled, dim=1) if self.normalize else pooled

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: Optional[bool] = None) -> torch.Tensor:
        """Embeddings ``[len(texts), hidden]`` float32, row ``i`` for ``texts[i]``.

        Args:
            texts (Sequence[str]): the sentences.
            batch_size (int): texts per forward pass.
            progress (Optional[bool]): a tqdm bar; None: only for more than ``4 * batch_size`` texts.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, got one str")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts[{bad[0]}] is {type(texts[bad[0]]).__name__}, expected str")
        out = torch.zeros((len(texts), self.dim), dtype=torch.float32)
        ids = [self.tokenizer.encode(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        starts = range(0, len(order), batch_size)
        if progress is None:
            progress = len(texts) > 4 * batch_size
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="MiniLM", unit="batch")
        for start in starts:
            rows = order[start : start + batch_size]
            width = max(len(ids[i]) for i in rows)
            batch = torch.full((len(rows), width), self.tokenizer.pad_id, dtype=torch.int64)
            mask = torch.zeros((len(rows), width), dtype=torch.int64)
            for k, i in enumerate(rows):
                batch[k, : len(ids[i])] = torch.tensor(ids[i])
                mask[k, : len(ids[i])] = 1
            out[torch.tensor(rows)] = self(batch, mask).float()
        return out
