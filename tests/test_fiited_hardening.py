"""What a user can hand a FIITED collection that is wrong -- options, batches, NaN steps -- gets a clear error or
a documented policy, never a silently poisoned store."""
import math
import warnings

import pytest
import torch
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.modules.embedding_configs import PoolingType

import emb_opt
from emb_opt.config import FiitedConfig
from tests.fiited_helpers import random_kjt, small_tables


def trained(**options) -> emb_opt.FiitedEmbeddingBagCollection:
    m = emb_opt.FiitedEmbeddingBagCollection(small_tables(), **{"memory_budget": 20000, "chunk_size": 4, **options})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in range(3):
            m(random_kjt(step, weighted=m.is_weighted())).values().pow(2).sum().backward()
    return m


def store_tensors(m):
    return {k: v.clone() for k, v in m.store.state_dict().items() if isinstance(v, torch.Tensor) and k != "counters"}


@pytest.mark.parametrize("options, match", [
    (dict(eps=-1.0), "eps must be >= 0"),
    (dict(eps=math.nan), "eps must be a finite number"),
    (dict(learning_rate=math.inf), "learning_rate must be a finite number"),
    (dict(learning_rate=0.0), "learning_rate must be > 0"),
    (dict(init_seed=2**80), r"init_seed must be in \[0, 2\^40\)"),
    (dict(init_seed=-1), r"init_seed must be in \[0, 2\^40\)"),
    (dict(chunk_size=2.5), "chunk_size must be an int"),
    (dict(warmup_steps=True), "warmup_steps must be an int"),
    (dict(utility_decay=math.nan), "utility_decay must be a finite number"),
    (dict(position_exponent=math.inf), "position_exponent must be a finite number"),
    (dict(nonfinite="ignore"), "nonfinite must be 'skip' or 'raise'"),
])
def test_bad_options_are_refused_naming_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        FiitedConfig(**options)
    with pytest.raises(ValueError, match=match):
        emb_opt.FiitedEmbeddingBagCollection(small_tables(), 20000, **{"chunk_size": 4, **options})


def test_a_zero_embedding_dim_is_refused_naming_the_table():
    tables = [EmbeddingBagConfig(name="empty", embedding_dim=0, num_embeddings=10, feature_names=["f"])]
    with pytest.raises(ValueError, match="table 'empty': embedding_dim must be >= 1"):
        emb_opt.FiitedEmbeddingBagCollection(tables, 20000, chunk_size=4)


def test_surplus_weights_and_negative_lengths_are_refused_naming_the_problem():
    m = trained(is_weighted=True)
    kjt = random_kjt(5, weighted=True)
    surplus = KeyedJaggedTensor(keys=kjt.keys(), values=kjt.values(), lengths=kjt.lengths(),
                                weights=torch.cat([kjt.weights(), torch.ones(2)]))
    with pytest.raises(ValueError, match=rf"holds {kjt.values().numel()} ids but {kjt.values().numel() + 2} per-sample weights"):
        m(surplus)
    lengths = kjt.lengths().clone()
    lengths[7], lengths[8] = lengths[7] + 1, -1  # feature f2 (the second, samples 6..11): sample 2 is negative
    bad = KeyedJaggedTensor(keys=kjt.keys(), values=kjt.values(), lengths=lengths, weights=kjt.weights())
    with pytest.raises(ValueError, match="feature 'f2': sample 2 has a negative length"):
        m(bad)


@pytest.mark.parametrize("poison", ["loss", "weights"])
def test_a_nan_step_is_skipped_counted_and_warned_once(poison):
    m = trained(is_weighted=True)
    before = store_tensors(m)
    kjt = random_kjt(7, weighted=True)
    if poison == "weights":
        weights = kjt.weights().clone()
        weights[3] = math.nan
        kjt = KeyedJaggedTensor(keys=kjt.keys(), values=kjt.values(), lengths=kjt.lengths(), weights=weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            out = m(kjt).values()
            loss = out.sum() * (math.nan if poison == "loss" else 1.0)
            loss.backward()
    nan_warnings = [w for w in caught if "NaN or inf" in str(w.message)]
    assert len(nan_warnings) == 1 and "skipped" in str(nan_warnings[0].message)
    assert m.store.counter_dict()["skipped_nonfinite"] == 2
    after = store_tensors(m)
    # rows the two forwards admitted got chunks (their init values); nothing already stored changed, nothing is NaN
    for name in ("pool_weights", "pool_state", "slot_utility", "entry_state"):
        assert torch.isfinite(after[name]).all(), name
    assert torch.equal(after["sketch"], before["sketch"])
    before_live, after_live = _live(before), _live(after)
    assert len(after_live) > len(before_live)  # the forwards admitted new rows
    for key, chunk in before_live.items():  # chunks stored before keep weights and utility (they may have moved)
        assert torch.equal(after_live[key], chunk), key
    m(random_kjt(8, weighted=True)).values().sum().backward()  # the next finite step trains
    assert m.store.counter_dict()["skipped_nonfinite"] == 2


def _live(tensors):
    """Chunk key -> its weights and utility, from a store's tensors."""
    keys, first, chunks = tensors["entry_keys"], tensors["entry_first"], tensors["entry_chunks"]
    out = {}
    for key, f, n in zip(keys.tolist(), first.tolist(), chunks.tolist()):
        for k in range(n):
            out[key + k] = torch.cat([tensors["pool_weights"][f + k], tensors["slot_utility"][f + k : f + k + 1]])
    return out


def test_nonfinite_raise_mode_raises_and_leaves_the_store_alone():
    m = trained(nonfinite="raise")
    before = store_tensors(m)
    kjt = random_kjt(2)  # rows already admitted: this forward admits nothing new
    with pytest.raises(FloatingPointError, match="output gradient of this training step hold NaN or inf"):
        (m(kjt).values().sum() * math.inf).backward()
    after = store_tensors(m)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert m.store.pending_backward == 0  # the failed backward released the store
    m.resize_now()


@pytest.mark.parametrize("budget", [4000, 6000, 20000])
def test_every_buffer_fits_the_budget_mixed_pooling_included(budget):
    tables = [EmbeddingBagConfig(name="s", embedding_dim=8, num_embeddings=40, feature_names=["f0", "f2"]),
              EmbeddingBagConfig(name="m", embedding_dim=8, num_embeddings=25, feature_names=["f1"],
                                 pooling=PoolingType.MEAN)]
    m = emb_opt.FiitedEmbeddingBagCollection(tables, budget, chunk_size=4, warmup_steps=2, resize_interval=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in range(6):
            m(random_kjt(step)).values().sum().backward()
            everything = sum(b.numel() * b.element_size() for b in m.buffers())
            assert everything == m.memory_bytes() <= budget
    assert int(emb_opt.memory_report(m).iloc[-1]["total_bytes"]) == m.memory_bytes()


def test_a_gradient_nan_in_one_sample_reaches_no_stored_value():
    # the CPU kernel checks each row's gradient as it sums it: the rows the NaN sample reaches are left alone,
    # the others train; nothing non-finite enters the store
    m = trained()
    before = _live(store_tensors(m))
    out = m(random_kjt(2)).values()  # rows already stored: nothing is admitted
    mask = torch.ones_like(out)
    mask[1] = math.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (out * mask).sum().backward()
    assert any("NaN or inf" in str(w.message) for w in caught)
    assert m.store.counter_dict()["skipped_nonfinite"] == 1
    after = _live(store_tensors(m))
    assert all(torch.isfinite(v).all() for v in after.values())
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert 0 < len(changed) < len(before)  # the other rows trained, the reached ones did not
