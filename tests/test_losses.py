"""Tests for backdrop.losses: AUC rank statistic and class-centroid distance (paper Eq. 3)."""

import itertools
import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from backdrop.losses import auc_rank_loss, centroid_distance_loss

EPS32 = torch.finfo(torch.float32).eps


def test_auc_rank_loss_tends_to_sklearn_auc_with_ties():
    g = torch.Generator().manual_seed(0)
    # integer scores: every non-zero pair gap is >= 1, so with beta = 40 each pair's sigmoid is
    # within exp(-40) ~ 4e-18 of the step function; ties give sigmoid(0) = 1/2 exactly as sklearn.
    scores = torch.randint(-5, 6, (300,), generator=g).to(torch.float64)
    targets = (torch.rand(300, generator=g) < 0.2).long()
    auc = roc_auc_score(targets.numpy(), scores.numpy())
    loss = auc_rank_loss(scores, targets, beta=40.0)
    assert abs((1 - loss.item()) - auc) < 1e-12


def test_auc_rank_loss_float32_matches_auc_to_float_precision():
    g = torch.Generator().manual_seed(1)
    targets = torch.tensor([1] * 40 + [0] * 200)
    scores = torch.randint(-20, 21, (240,), generator=g).float()
    auc = roc_auc_score(targets.numpy(), scores.numpy())
    loss = auc_rank_loss(scores, targets, beta=50.0)
    # mean of 8000 terms in [0, 1]: float32 summation error <= ~ log2(8000) * eps
    assert abs((1 - loss.item()) - auc) < 16 * EPS32


def test_auc_rank_loss_gradient_by_hand():
    s = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1, 0, 1, 0])
    beta = 2.0
    auc_rank_loss(s, t, beta).backward()
    pos, neg = [0, 2], [1, 3]

    def dsig(u):
        sg = 1 / (1 + math.exp(-u))
        return sg * (1 - sg)

    expected = [0.0] * 4
    for i, j in itertools.product(pos, neg):
        d = beta * dsig(beta * (s[i].item() - s[j].item())) / 4
        expected[i] -= d
        expected[j] += d
    torch.testing.assert_close(s.grad, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize(
    "targets,match",
    [
        (torch.ones(5, dtype=torch.long), "targets must contain both classes.*5 positives and 0"),
        (torch.zeros(5, dtype=torch.bool), "targets must contain both classes.*0 positives and 5"),
        (torch.tensor([0, 1, 2, 0, 1]), "binary"),
        (torch.tensor([0, 1, 0]), "one entry per row"),
    ],
)
def test_auc_rank_loss_bad_targets(targets, match):
    with pytest.raises(ValueError, match=match):
        auc_rank_loss(torch.randn(5), targets)


def test_auc_rank_loss_bad_beta():
    with pytest.raises(ValueError, match="beta must be > 0.*-1"):
        auc_rank_loss(torch.randn(4), torch.tensor([0, 1, 0, 1]), beta=-1.0)


def _centroid_loop(v, y, d):
    classes = sorted(set(y.tolist()))
    cent = {c: v[y == c].mean(0) for c in classes}
    total = 0.0
    for a, b in itertools.combinations(classes, 2):
        total += (float(((cent[a] - cent[b]) ** 2).sum()) - d**2) ** 2
    return total, len(classes) * (len(classes) - 1) // 2


def test_centroid_distance_loss_matches_plain_loop():
    g = torch.Generator().manual_seed(2)
    v = torch.randn(50, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (50,), generator=g)
    y[y == 3] = 4  # an absent class must be left out
    expected, pairs = _centroid_loop(v, y, 1.5)
    got = centroid_distance_loss(v, y, 1.5)
    assert math.isclose(got.item(), expected, rel_tol=1e-12)
    got_mean = centroid_distance_loss(v, y, 1.5, reduction="mean")
    assert math.isclose(got_mean.item(), expected / pairs, rel_tol=1e-12)


def test_centroid_distance_loss_gradient_flows_to_all_samples_of_a_class():
    v = torch.tensor([[0.0, 0.0], [2.0, 0.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1])
    loss = centroid_distance_loss(v, y, 1.0)  # centroids (1,0),(3,4): ||.||^2 = 20
    assert loss.item() == pytest.approx((20 - 1) ** 2)
    loss.backward()
    # dL/dv_c1 = 2 * 19 * 2 * (v_c1 - v_c2) = 76 * (-2, -4); each class-0 sample gets half
    torch.testing.assert_close(v.grad[0], torch.tensor([-76.0, -152.0], dtype=torch.float64))
    torch.testing.assert_close(v.grad[1], v.grad[0])
    torch.testing.assert_close(v.grad[2], torch.tensor([152.0, 304.0], dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (
            dict(targets=torch.zeros(4, dtype=torch.long)),
            ValueError,
            r"at least two classes.*\[0\]",
        ),
        (dict(targets=torch.tensor([0.0, 1, 0, 1])), TypeError, "integer tensor"),
        (dict(distance=-1.0), ValueError, "distance must be >= 0"),
        (dict(reduction="max"), ValueError, "reduction must be"),
        (dict(features=torch.randn(4)), ValueError, r"2-d \(N, D\)"),
    ],
)
def test_centroid_distance_loss_bad_arguments(kwargs, exc, match):
    args = dict(features=torch.randn(4, 3), targets=torch.tensor([0, 1, 0, 1]), distance=1.0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        centroid_distance_loss(**args)
