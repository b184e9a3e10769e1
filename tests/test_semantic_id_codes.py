"""Codes: RQ-KMeans / RQ-VAE fit, usage, determinism, save -> load -> re-quantize, codes tables, collision report."""
import pytest
import torch

import semantic_id as S


def clustered(n=1200, dim=16, clusters=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g) * 3
    sub = torch.randn(clusters * 4, dim, generator=g)
    leaf = torch.randint(0, clusters * 4, (n,), generator=g)
    return centres[leaf // 4] + sub[leaf] + 0.2 * torch.randn(n, dim, generator=g)


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = centres[torch.arange(300) % 3] + 0.1 * torch.randn(300, 2, generator=g)
    found = S.kmeans(x, 3, seed=1)
    distance = torch.cdist(found, centres).min(1).values
    assert distance.max() < 0.2


def test_rqkmeans_deterministic_and_reduces_error():
    x = clustered()
    codes_a, quantizer = S.build_codes(x, 3, 16, method="rqkmeans", return_quantizer=True)
    codes_b = S.build_codes(x, 3, 16, method="rqkmeans")
    assert codes_a.shape == (1200, 3) and codes_a.dtype == torch.int64
    assert torch.equal(codes_a, codes_b)
    assert 0 <= int(codes_a.min()) and int(codes_a.max()) < 16
    # each extra level lowers the reconstruction error
    errors = [float((quantizer.decode(codes_a[:, :l]) - x).pow(2).mean()) for l in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]
    assert quantizer.reconstruction_error(x) == pytest.approx(errors[2], rel=1e-5)


def test_rqvae_usage_reconstruction_and_history():
    x = clustered()
    codes, quantizer = S.build_codes(x, 3, 16, method="rqvae", return_quantizer=True, epochs=12, batch_size=128,
                                     progress=False, hidden_dims=(64, 32), latent_dim=16)
    report = S.collision_report(codes, 16)
    assert min(report.usage_per_level) >= 0.8, report.summary()
    assert len(quantizer.history) == 12
    assert {"recon_mse", "vq_loss", "usage_l0", "usage_l2"} <= set(quantizer.history[0])
    assert quantizer.history[-1]["recon_mse"] < quantizer.history[0]["recon_mse"]
    # the quantized reconstruction explains most of the variance of the content
    assert quantizer.reconstruction_error(x) < 0.5 * float(x.var(0).mean())


@pytest.mark.parametrize("method", ["rqvae", "rqkmeans"])
def test_save_load_requantize_identical(tmp_path, method):
    x = clustered(n=600)
    extra = {"epochs": 3, "progress": False, "hidden_dims": (32,), "latent_dim": 8} if method == "rqvae" else {}
    codes, quantizer = S.build_codes(x[:500], 2, 8, method=method, return_quantizer=True, **extra)
    S.save_quantizer(quantizer, tmp_path / "q.pt")
    loaded = S.load_quantizer(tmp_path / "q.pt")
    assert type(loaded) is type(quantizer)
    assert torch.equal(S.quantize(loaded, x[:500]), codes)
    # new items get codes from the same codebooks, before and after the round trip
    assert torch.equal(S.quantize(loaded, x[500:]), S.quantize(quantizer, x[500:]))
    S.save_codes(codes, tmp_path / "codes.pt", codebook_size=8)
    table = S.load_codes(tmp_path / "codes.pt")
    assert torch.equal(table.codes, codes) and table.codebook_size == 8


def test_unfitted_and_bad_inputs():
    with pytest.raises(RuntimeError, match="before fit"):
        S.RQKMeans(4, 2, 4).encode(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="unfitted"):
        S.save_quantizer(S.RQVAE(4, 2, 4), "/tmp/never_written.pt")
    with pytest.raises(ValueError, match="unknown method"):
        S.build_codes(torch.zeros(5, 4), 2, 4, method="pq")
    with pytest.raises(TypeError, match="unknown argument"):
        S.build_codes(torch.randn(5, 4), 2, 4, method="rqkmeans", epochs=3)
    with pytest.raises(ValueError, match=r"\[n, 4\]"):
        S.build_codes(torch.randn(20, 4), 1, 2, method="rqkmeans", return_quantizer=True)[1].encode(torch.zeros(2, 5))


def test_collision_report_hand_computed():
    codes = torch.tensor([[0, 1], [0, 1], [0, 2], [1, 0], [-1, -1]])
    report = S.collision_report(codes, codebook_size=4)
    assert report.num_items == 4                     # the -1 row (no code) is left out
    assert report.usage_per_level == [2 / 4, 3 / 4]  # level 1 uses {0,1}, level 2 uses {0,1,2}
    assert report.distinct_prefixes == [2, 3]
    assert report.max_items_per_prefix == [3, 2]
    assert report.shared_fraction == [3 / 4, 2 / 4]
    assert report.full_code_load_histogram == {1: 2, 2: 1}
    assert list(report.table()["distinct_prefixes"]) == [2, 3]
    assert "level 2" in report.summary()


def test_dense_codes_table():
    table = S.dense_codes_table(torch.tensor([3, 0]), torch.tensor([[1, 2], [3, 0]]), num_items=5)
    assert table.tolist() == [[3, 0], [-1, -1], [-1, -1], [1, 2], [-1, -1]]
    with pytest.raises(ValueError, match="distinct"):
        S.dense_codes_table(torch.tensor([1, 1]), torch.zeros(2, 2, dtype=torch.long))
