"""Click-through-rate metrics: AUC, log loss and normalized entropy (NE), exact and dependency-free.

NE (He et al. 2014, the metric Meta reports) = log loss / entropy of the empirical base rate: 1.0 is a model
that always predicts the average CTR, lower is better. AUC uses average ranks, so ties count one half.
"""
from __future__ import annotations

import math
from typing import Dict

import torch


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` ([n] each); NaN if one class is absent."""
    scores = scores.reshape(-1).double()
    labels = labels.reshape(-1).double()
    positives = float(labels.sum())
    negatives = labels.numel() - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    # average the ranks of tied scores
    unique, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    if unique.numel() < scores.numel():
        ends = torch.cumsum(counts, 0).double()
        mean_rank = ends - (counts.double() - 1) / 2
        ranks[order] = mean_rank[inverse]
    rank_sum = float(ranks[labels > 0.5].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def log_loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean binary cross-entropy of ``logits`` (pre-sigmoid) against ``labels``."""
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logits.double(), labels.double()))


def normalized_entropy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Log loss divided by the entropy of the base rate ``p = mean(labels)``."""
    p = float(labels.double().mean())
    if p <= 0.0 or p >= 1.0:
        return float("nan")
    base = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    return log_loss(logits, labels) / base


def ctr_metrics(logits: torch.Tensor, labels: torch.Tensor) -> Dict[str, float]:
    """{"auc", "log_loss", "ne"} of one evaluation set."""
    return {"auc": auc(logits, labels), "log_loss": log_loss(logits, labels), "ne": normalized_entropy(logits, labels)}
