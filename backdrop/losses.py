"""Non-decomposable losses from the paper's Sec. 3.1: ROC AUC rank statistic and Eq. 3.

Both losses couple all samples of the batch, so minibatching changes what they estimate; backdrop
(mask the latents, keep the batch) is the paper's way to regain stochasticity for them.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["auc_rank_loss", "centroid_distance_loss"]


def _check_1d_pair(scores: Tensor, targets: Tensor, name: str) -> None:
    if not isinstance(scores, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(f"{name} and targets must be torch.Tensors")
    if targets.ndim != 1 or scores.shape[0] != targets.shape[0]:
        raise ValueError(
            f"targets must be 1-d with one entry per row of {name}: "
            f"got {name} {tuple(scores.shape)}, targets {tuple(targets.shape)}"
        )


def auc_rank_loss(scores: Tensor, targets: Tensor, beta: float = 1.0) -> Tensor:
    """One minus the sigmoid-relaxed ROC AUC (rank statistic, Herschtal & Raskutti 2004).

    ``R = mean over (i positive, j negative) of sigmoid(beta * (s_i - s_j))``, loss ``= 1 - R``.
    As ``beta -> inf``, ``R`` tends to the ROC AUC with ties counted 1/2 (as in
    ``sklearn.metrics.roc_auc_score``); it is exact up to ``exp(-beta * gap)`` per pair.

    Args:
        scores: ``(N,)`` real scores, higher = more likely positive (e.g. logits).
        targets: ``(N,)`` binary labels (bool or ints 0/1); both classes must be present.
        beta: steepness of the sigmoid, in units of 1/score, > 0.
    Returns:
        scalar loss in (0, 1); memory O(P * Q) for P positives and Q negatives.
    """
    _check_1d_pair(scores, targets, "scores")
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-d (N,), got shape {tuple(scores.shape)}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (sigmoid steepness), got {beta!r}")
    t = targets.to(torch.int64)
    if bool(((t != 0) & (t != 1)).any()):
        raise ValueError(
            f"targets must be binary (0/1), got values {torch.unique(targets).tolist()}"
        )
    pos, neg = scores[t == 1], scores[t == 0]
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError(
            f"targets must contain both classes, got {pos.numel()} positives and "
            f"{neg.numel()} negatives"
        )
    return 1.0 - torch.sigmoid(beta * (pos[:, None] - neg[None, :])).mean()


def centroid_distance_loss(
    features: Tensor, targets: Tensor, distance: float, reduction: str = "sum"
) -> Tensor:
    """Class-centroid separation loss L_dist of paper Eq. 3.

    ``L_dist = sum over class pairs c < c' of (||v_c - v_c'||_2^2 - d^2)^2`` with ``v_c`` the mean
    of the features of the samples of class ``c`` in the batch. Classes absent from the batch
    have no centroid and are left out.

    Args:
        features: ``(N, D)`` hidden states ``v_n`` (e.g. the next-to-final layer).
        targets: ``(N,)`` integer class labels; at least two classes must be present.
        distance: target centroid distance ``d`` (feature units), >= 0.
        reduction: ``"sum"`` over the class pairs (Eq. 3) or ``"mean"`` over them.
    Returns:
        scalar loss.
    """
    _check_1d_pair(features, targets, "features")
    if features.ndim != 2:
        raise ValueError(f"features must be 2-d (N, D), got shape {tuple(features.shape)}")
    if not distance >= 0:
        raise ValueError(f"distance must be >= 0, got {distance!r}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must be an integer tensor, got dtype {targets.dtype}")
    classes, inverse = torch.unique(targets, return_inverse=True)
    k = classes.numel()
    if k < 2:
        raise ValueError(f"targets must contain at least two classes, got {classes.tolist()}")
    counts = torch.bincount(inverse, minlength=k).to(features.dtype)
    sums = torch.zeros(k, features.shape[1], dtype=features.dtype, device=features.device)
    sums = sums.index_add(0, inverse, features)
    centroids = sums / counts[:, None]
    diff = centroids[:, None, :] - centroids[None, :, :]
    sq = (diff**2).sum(-1)
    i, j = torch.triu_indices(k, k, offset=1, device=features.device)
    terms = (sq[i, j] - distance**2) ** 2
    return terms.sum() if reduction == "sum" else terms.mean()
