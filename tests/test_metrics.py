import math

import torch

from experiments.metrics import auc, ctr_metrics, log_loss, normalized_entropy


def _auc_pairs(scores, labels):
    pos = [s for s, l in zip(scores, labels) if l == 1]
    neg = [s for s, l in zip(scores, labels) if l == 0]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return total / (len(pos) * len(neg))


def test_auc_matches_pair_counting_with_ties():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        scores = torch.randint(0, 6, (200,), generator=gen).float()  # many ties
        labels = (torch.rand(200, generator=gen) < 0.3).float()
        assert abs(auc(scores, labels) - _auc_pairs(scores.tolist(), labels.tolist())) < 1e-12


def test_auc_extremes():
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert math.isnan(auc(torch.tensor([0.1, 0.2]), torch.tensor([1.0, 1.0])))


def test_ne_of_base_rate_predictor_is_one():
    labels = (torch.rand(10000, generator=torch.Generator().manual_seed(1)) < 0.25).float()
    p = float(labels.mean())
    logits = torch.full_like(labels, math.log(p / (1 - p)))
    assert abs(normalized_entropy(logits, labels) - 1.0) < 1e-9
    m = ctr_metrics(logits, labels)
    assert m["log_loss"] == log_loss(logits, labels) and abs(m["auc"] - 0.5) < 1e-12
