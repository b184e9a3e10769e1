"""FIITED the way TorchRec users train: the embedding optimizer they declared is the one FIITED fuses, and a meta
model (planning, shape inference) runs its forward."""
import warnings

import pytest
import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.models.dlrm import DLRM
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

import emb_opt
from tests.fiited_helpers import random_kjt, small_tables


def dlrm_with(ebc: torch.nn.Module) -> DLRM:
    torch.manual_seed(0)
    return DLRM(embedding_bag_collection=ebc, dense_in_features=3, dense_arch_layer_sizes=[8],
                over_arch_layer_sizes=[4, 1])


def declared(optimizer_class, kwargs) -> DLRM:
    model = dlrm_with(EmbeddingBagCollection(small_tables()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        apply_optimizer_in_backward(optimizer_class, model.sparse_arch.embedding_bag_collection.parameters(), kwargs)
    return model


def fiited_of(model: DLRM) -> emb_opt.FiitedEmbeddingBagCollection:
    return model.sparse_arch.embedding_bag_collection


def test_convert_reads_the_optimizer_declared_with_apply_optimizer_in_backward():
    model = emb_opt.convert(declared(RowWiseAdagrad, {"lr": 0.05, "eps": 1e-6}), 0.5, copy_weights=False,
                            chunk_size=4)
    config = fiited_of(model).config
    assert (config.optimizer.value, config.learning_rate, config.eps) == ("rowwise_adagrad", 0.05, 1e-6)
    sgd = emb_opt.convert(declared(torch.optim.SGD, {"lr": 0.3}), 0.5, copy_weights=False, chunk_size=4)
    assert (fiited_of(sgd).config.optimizer.value, fiited_of(sgd).config.learning_rate) == ("sgd", 0.3)


def test_explicit_arguments_win_over_the_declaration():
    model = emb_opt.convert(declared(RowWiseAdagrad, {"lr": 0.05}), 0.5, copy_weights=False, chunk_size=4,
                            learning_rate=0.2)
    assert fiited_of(model).config.learning_rate == 0.2 and fiited_of(model).config.optimizer.value == "rowwise_adagrad"


def test_an_undeclared_learning_rate_is_warned_about_naming_the_default():
    with pytest.warns(UserWarning, match=r"no learning rate given or declared .* default learning_rate=0.01"):
        emb_opt.convert(dlrm_with(EmbeddingBagCollection(small_tables())), 0.5, copy_weights=False, chunk_size=4)
    with pytest.warns(UserWarning, match=r"FiitedEmbeddingBagCollection: no learning rate given or declared"):
        emb_opt.FiitedEmbeddingBagCollection(small_tables(), 20000, chunk_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # given: no warning
        emb_opt.FiitedEmbeddingBagCollection(small_tables(), 20000, chunk_size=4, learning_rate=0.1)


def test_fused_params_as_torchrec_and_fbgemm_spell_them():
    m = emb_opt.FiitedEmbeddingBagCollection(small_tables(), 20000, chunk_size=4, fused_params={
        "optimizer": EmbOptimType.EXACT_ADAGRAD, "learning_rate": 0.07, "eps": 1e-5})
    assert (m.config.optimizer.value, m.config.learning_rate, m.config.eps) == ("adagrad", 0.07, 1e-5)
    m = emb_opt.FiitedEmbeddingBagCollection(small_tables(), 20000, chunk_size=4, learning_rate=0.2,
                                             fused_params={"learning_rate": 0.07})
    assert m.config.learning_rate == 0.2 and m.optimizer_chosen


def test_declarations_the_fused_update_cannot_follow_are_refused_by_name():
    with pytest.raises(ValueError, match="unsupported optimizer"):
        emb_opt.convert(declared(torch.optim.Adam, {"lr": 0.01}), 0.5, copy_weights=False, chunk_size=4)
    model = dlrm_with(EmbeddingBagCollection(small_tables()))
    ebc = model.sparse_arch.embedding_bag_collection
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        apply_optimizer_in_backward(RowWiseAdagrad, [ebc.embedding_bags["t0"].weight], {"lr": 0.05})
        apply_optimizer_in_backward(RowWiseAdagrad, [ebc.embedding_bags["t1"].weight], {"lr": 0.01})
    with pytest.raises(ValueError, match="its tables declare different optimizers in backward"):
        emb_opt.convert(model, 0.5, copy_weights=False, chunk_size=4)


def test_the_declared_learning_rate_trains_as_the_explicit_one():
    a = emb_opt.convert(declared(RowWiseAdagrad, {"lr": 0.05}), 0.5, copy_weights=False, chunk_size=4)
    b = emb_opt.convert(dlrm_with(EmbeddingBagCollection(small_tables())), 0.5, copy_weights=False, chunk_size=4,
                        learning_rate=0.05)
    for step in range(3):
        dense = torch.randn(6, 3, generator=torch.Generator().manual_seed(step))
        outs = [m(dense, random_kjt(step)) for m in (a, b)]
        torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
        for out in outs:
            out.sum().backward()
    torch.testing.assert_close(fiited_of(a).to_dense_weights("t0"), fiited_of(b).to_dense_weights("t0"), rtol=0, atol=0)


def test_a_meta_model_runs_its_forward_for_shape_inference():
    model = dlrm_with(emb_opt.FiitedEmbeddingBagCollection(small_tables(), 20000, chunk_size=4, learning_rate=0.1))
    model.to("meta")
    kjt = random_kjt(1).to("meta")
    out = model(torch.randn(6, 3, device="meta"), kjt)
    assert out.shape == (6, 1) and out.is_meta
    built = emb_opt.FiitedEmbeddingBagCollection(small_tables(), 20000, chunk_size=4, learning_rate=0.1, device="meta")
    pooled = built(kjt)
    assert pooled.values().shape == (6, 3 * 8) and pooled.values().is_meta and built.store.pool_weights.is_meta
