"""emb_opt.hashed_init: the deterministic init of FIITED chunks, and the same init given to dense TorchRec tables
(the experiments' common random numbers)."""
import pytest
import torch
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
from torchrec.optim import RowWiseAdagrad

import emb_opt
from emb_opt.hashed_init import hashed_dense_init, hashed_uniform, name_salt
from experiments.dlrm_methods import hashed_init_dense_tables_
from tests.fiited_helpers import random_kjt, small_tables


def test_values_are_uniform_in_the_range_and_a_function_of_name_row_column_seed():
    rows, cols = torch.arange(20000), torch.arange(64)
    a = hashed_uniform(name_salt("t0"), rows, cols, 0.5)
    assert a.shape == (20000, 64)
    assert float(a.min()) >= -0.5 and float(a.max()) < 0.5
    assert abs(float(a.mean())) < 0.005
    assert abs(float(a.std()) - 0.5 / 3**0.5) < 0.005
    assert torch.equal(a, hashed_uniform(name_salt("t0"), rows, cols, 0.5))
    # another table, another seed, another row: other values (no shared streams)
    for other in (hashed_uniform(name_salt("t1"), rows, cols, 0.5), hashed_uniform(name_salt("t0"), rows, cols, 0.5, seed=1),
                  hashed_uniform(name_salt("t0"), rows + 1, cols, 0.5)):
        assert float((other - a).abs().mean()) > 0.1
    # per-row columns [n, m] give the same values as the shared column list
    part = hashed_uniform(name_salt("t0"), rows[:5], torch.tensor([[3, 4]] * 5), 0.5)
    assert torch.equal(part, a[:5, 3:5])
    with pytest.raises(ValueError, match="embedding dims below"):
        hashed_uniform(0, rows[:2], torch.tensor([1 << 20]), 1.0)


def test_dense_init_is_blockwise_the_same_as_rowwise():
    table = hashed_dense_init("t_cat_3", 1000, 16, 0.1, seed=3, block_rows=128)
    assert torch.equal(table, hashed_uniform(name_salt("t_cat_3"), torch.arange(1000), torch.arange(16), 0.1, seed=3))


@pytest.mark.parametrize("chunk_size", [2, 4, 8])
def test_fiited_chunks_start_from_the_hashed_init_whatever_the_chunk_size(chunk_size):
    tables = small_tables(dim=8)
    ebc = emb_opt.FiitedEmbeddingBagCollection(tables, 10**7, chunk_size=chunk_size, optimizer="sgd", init_seed=5)
    kjt = random_kjt(0, batch_size=16)
    (ebc(kjt).values().sum() * 0).backward()  # admits the touched rows; a zero gradient leaves them as they are
    for t in tables:
        dense = ebc.to_dense_weights(t.name)
        touched = dense.abs().sum(1) > 0
        assert int(touched.sum()) > 3
        expected = hashed_dense_init(t.name, t.num_embeddings, 8, t.num_embeddings ** -0.5, seed=5)
        torch.testing.assert_close(dense[touched], expected[touched], rtol=0, atol=0)


def test_readmitted_chunks_start_again_from_their_original_values():
    tables = small_tables(dim=8)
    ebc = emb_opt.FiitedEmbeddingBagCollection(tables, 10**7, chunk_size=4, optimizer="sgd")
    kjt = random_kjt(1, batch_size=16)
    (ebc(kjt).values().sum() * 0).backward()
    first = ebc.to_dense_weights("t1").clone()
    ebc.store.slot_utility.zero_()  # no chunk was ever used: a resize prunes every one of them
    ebc.resize_now()
    assert ebc.store.num_live == 0
    (ebc(kjt).values().sum() * 0).backward()
    assert torch.equal(ebc.to_dense_weights("t1"), first)


def test_dense_tables_get_the_same_init_as_a_fiited_store_of_them():
    tables = small_tables(dim=8)
    fused = FusedEmbeddingBagCollection(tables, optimizer_type=RowWiseAdagrad, optimizer_kwargs={"lr": 0.1})
    assert hashed_init_dense_tables_(fused, seed=2) == len(tables)
    fiited = emb_opt.FiitedEmbeddingBagCollection(tables, 10**7, chunk_size=4, optimizer="sgd", init_seed=2)
    kjt = random_kjt(2, batch_size=16)
    with torch.no_grad():
        dense_out = fused(kjt).values()
    fiited_out = fiited(kjt).values()  # training forward: admits every touched row with its init
    torch.testing.assert_close(fiited_out, dense_out, rtol=1e-6, atol=1e-6)


def test_every_method_of_the_comparison_starts_from_the_same_embeddings():
    from experiments.dlrm_methods import build_collection

    tables = small_tables(dim=8)
    kjt = random_kjt(3, batch_size=16)
    options = dict(seed=7, learning_rate=0.1, chunk_size=4, fiited_options={})
    full = build_collection("full", None, tables, **options)
    params = dict(full.named_parameters())
    for method in ("rowprune", "fiited"):
        collection = build_collection(method, 1.0, tables, **options)
        collection(kjt)  # a training forward admits the touched rows (as many as the budget holds)
        for t in tables:
            stored = collection.to_dense_weights(t.name)
            held = stored != 0  # chunks in the store
            assert int(held.sum()) >= 16
            dense = params[f"embedding_bags.{t.name}.weight"].detach()
            torch.testing.assert_close(stored[held], dense[held], rtol=0, atol=0)


def test_a_table_too_wide_for_the_init_key_is_refused_at_construction():
    from torchrec import EmbeddingBagConfig

    wide = [EmbeddingBagConfig(name="wide", embedding_dim=1 << 20, num_embeddings=4, feature_names=["f"])]
    with pytest.raises(ValueError, match="table 'wide': embedding_dim 1048576 is too large"):
        emb_opt.FiitedEmbeddingBagCollection(wide, 10**9, chunk_size=1 << 15)
