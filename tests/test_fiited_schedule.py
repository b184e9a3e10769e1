"""When FIITED resizes: on the warm-up / interval schedule, and early under pressure (admissions denied because
the budget is full), so a store that fills in its first steps does not serve only the first rows it saw until
the warm-up ends."""
import warnings

import torch
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor

import emb_opt

TABLES = [EmbeddingBagConfig(name="t", embedding_dim=8, num_embeddings=10_000, feature_names=["f"])]


def batch(step: int, rows: int = 10_000, size: int = 64) -> KeyedJaggedTensor:
    values = torch.randint(0, rows, (size,), generator=torch.Generator().manual_seed(step))
    return KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=values, lengths=torch.ones(size, dtype=torch.int32))


def train(module: emb_opt.FiitedEmbeddingBagCollection, steps: int, rows: int = 10_000) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in range(steps):
            module(batch(step, rows)).values().pow(2).sum().backward()


def test_a_full_store_resizes_under_pressure_before_the_warm_up_ends():
    m = emb_opt.FiitedEmbeddingBagCollection(TABLES, 3000, chunk_size=4, warmup_steps=10**6, pressure_resize_steps=5)
    train(m, 30)
    # the store fills in step 0; the first resize runs at the start of step 5, later ones only while admissions
    # are still denied, never closer than 5 steps apart
    steps = [r["step"] for r in m.telemetry]
    assert steps[0] == 5 and all(b - a >= 5 for a, b in zip(steps, steps[1:]))
    assert m.store.counter_dict()["last_resize_step"] == steps[-1]
    assert m.memory_bytes() <= m.budget_bytes


def test_pressure_resizes_can_be_turned_off():
    m = emb_opt.FiitedEmbeddingBagCollection(TABLES, 3000, chunk_size=4, warmup_steps=10**6, pressure_resize_steps=0)
    train(m, 12)
    assert m.telemetry == [] and m.store.counter_dict()["denied_admissions"] > 0


def test_no_pressure_without_denials():
    m = emb_opt.FiitedEmbeddingBagCollection(TABLES, 10**6, chunk_size=4, warmup_steps=10**6, pressure_resize_steps=2)
    train(m, 8, rows=50)  # everything fits
    assert m.telemetry == [] and m.store.counter_dict()["denied_admissions"] == 0


def test_the_schedule_still_runs_alongside_pressure():
    m = emb_opt.FiitedEmbeddingBagCollection(TABLES, 10**6, chunk_size=4, warmup_steps=3, resize_interval=4,
                                             pressure_resize_steps=2)
    train(m, 12, rows=50)
    assert [r["step"] for r in m.telemetry] == [3, 7, 11]
