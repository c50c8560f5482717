"""gx.metrics' embedding diagnostics (mixing of two sets, CORAL, MMD, kNN overlap) on known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import gearsx as gx


def test_knn_mixing_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 3)), rng.normal(loc=0.7, size=(40, 3))
    out = gx.metrics.knn_mixing(a, b, k=5, random_state=0)
    # same subsample as the function (40 a side: a permutation, which leaves each point's neighbours alone)
    x, label = np.vstack([a, b]), np.r_[np.zeros(40), np.ones(40)]
    d = cdist(x, x)
    np.fill_diagonal(d, np.inf)
    p = label[np.argsort(d, axis=1)[:, :5]].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nan_to_num(p * np.log2(p)) - np.nan_to_num((1 - p) * np.log2(1 - p))
    assert out["mixing_entropy"] == pytest.approx(h.mean())
    assert out["ilisi"] == pytest.approx((1 / (p**2 + (1 - p) ** 2)).mean())


def test_knn_mixing_separated_and_mixed_sets():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 2))
    apart = gx.metrics.knn_mixing(a, a + 100, k=10)
    assert apart == {"mixing_entropy": 0.0, "ilisi": 1.0}
    mixed = gx.metrics.knn_mixing(a, rng.normal(size=(300, 2)), k=10)
    assert mixed["mixing_entropy"] > 0.8
    assert mixed["ilisi"] > 1.7
    # two sets at one and the same point cannot be told apart: ties in row order made them "separated" (0.0)
    tied = gx.metrics.knn_mixing(np.zeros((300, 2)), np.zeros((300, 2)), k=10)
    assert tied["mixing_entropy"] > 0.9


def test_coral_and_mmd_are_zero_for_one_set_and_grow_with_a_shift():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(200, 4))
    assert gx.metrics.coral_distance(a, a) == 0.0
    assert gx.metrics.mmd_rbf(a, a) == pytest.approx(0.0, abs=1e-12)
    assert gx.metrics.coral_distance(a, 3 * a) > 0.1
    assert gx.metrics.mmd_rbf(a, a + 2) > gx.metrics.mmd_rbf(a, a + 0.5) > 0
    # both sets one and the same point (no positive distance for the bandwidth): was NaN with a warning
    assert gx.metrics.mmd_rbf(np.ones((30, 4)), np.ones((20, 4))) == 0.0
    assert gx.metrics.mmd_rbf(np.ones((30, 4)), np.zeros((20, 4))) > 0.5


@pytest.mark.parametrize(
    "call",
    [gx.metrics.coral_distance, gx.metrics.mmd_rbf, gx.metrics.knn_mixing, gx.metrics.domain_classifier_accuracy],
)
def test_two_sets_must_share_their_columns(call):
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="same space; got 2 and 3 columns"):
        call(rng.normal(size=(50, 2)), rng.normal(size=(50, 3)))


def test_knn_mixing_refuses_more_neighbours_than_points():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(5, 2)), rng.normal(size=(50, 2))
    with pytest.raises(ValueError, match="lower `k` below 10"):
        gx.metrics.knn_mixing(a, b, k=30)
    with pytest.raises(ValueError, match="`k` must be an integer >= 1"):
        gx.metrics.knn_mixing(a, b, k=0)
    assert set(gx.metrics.knn_mixing(a, b, k=9)) == {"mixing_entropy", "ilisi"}


def test_knn_overlap_needs_one_group_per_cell():
    xy = np.random.default_rng(5).uniform(size=(100, 2))
    with pytest.raises(ValueError, match="`groups` has 50 entries"):
        gx.metrics.knn_overlap(xy, xy, k=5, groups=np.zeros(50))
    # one group per cell, two groups: neighbours searched within each, still perfect on the truth
    assert gx.metrics.knn_overlap(xy, xy, k=5, groups=np.repeat([0, 1], 50)) == 1.0
    # a group too small is named as the user wrote it: 3, not numpy's np.int64(3)
    with pytest.raises(ValueError, match=r"^Group 3 has 3 cells; knn_overlap with k=5 needs more than k\.$"):
        gx.metrics.knn_overlap(xy, xy, k=5, groups=np.repeat([3, 1], [3, 97]))
