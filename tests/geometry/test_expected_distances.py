"""Expected distances between uncertain positions, and the layout that follows them: known answers."""

from __future__ import annotations

import numpy as np
import pytest

import gearsx as gx
from gearsx.geometry import expected_distance, expected_distance_layout


def test_expected_distance_matches_monte_carlo():
    """The Rice mean against sampled differences of two scattered positions (a reference computation)."""
    rng = np.random.default_rng(0)
    mean = np.array([0.0, 0.3, 1.0, 2.5, 8.0])
    var = np.array([1.0, 0.5, 2.0, 0.1, 4.0])  # s_i^2 + s_j^2: mean squared length of the scatter
    draws = rng.normal(size=(400_000, 2))
    for m, v in zip(mean, var, strict=True):
        diff = np.array([m, 0.0]) + np.sqrt(v / 2) * draws
        np.testing.assert_allclose(expected_distance(m, v), np.linalg.norm(diff, axis=1).mean(), rtol=4e-3)


def test_expected_distance_limits():
    # no mean offset: sigma sqrt(pi / 2) with sigma^2 = v / 2
    np.testing.assert_allclose(expected_distance(0.0, 2.0), np.sqrt(np.pi / 2), rtol=1e-12)
    # no scatter: the distance itself; never below it; far apart: m + sigma^2 / (2 m)
    np.testing.assert_allclose(expected_distance(np.array([3.0, 0.0]), np.zeros(2)), [3.0, 0.0])
    m = np.linspace(0, 50, 101)
    assert (expected_distance(m, np.full_like(m, 1.0)) >= m).all()
    np.testing.assert_allclose(expected_distance(100.0, 2.0), 100.0 + 1.0 / 200.0, rtol=1e-8)


def _shrunk(n=2000, seed=0):
    """Truth in the unit square; anchors drawn towards the middle the more uncertain the cell is."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(size=(n, 2))
    spread = rng.uniform(0.02, 0.4, n)
    anchors = 0.5 + (truth - 0.5) / (1 + (spread / 0.1) ** 2)[:, None] + rng.normal(scale=0.02, size=truth.shape)
    return truth, anchors, spread


def test_layout_undoes_the_shrinkage_of_uncertain_anchors():
    truth, anchors, spread = _shrunk()
    out = expected_distance_layout(anchors, anchors, spread, np.ones(len(anchors)), random_state=0)
    before = gx.metrics.evaluate_geometry(anchors, truth)
    after = gx.metrics.evaluate_geometry(out, truth)
    assert after["stress1"] < before["stress1"] - 0.1
    assert after["spearman"] > before["spearman"] + 0.1
    assert after["edge_auc"] > before["edge_auc"]
    # back in the anchors' frame: its weighted centre is theirs, and it is no farther from them than a copy
    # of the same shape scaled about that centre
    np.testing.assert_allclose(out.mean(0), anchors.mean(0), atol=1e-9)
    for scale in (0.8, 1.25):
        scaled = anchors.mean(0) + scale * (out - anchors.mean(0))
        assert ((out - anchors) ** 2).sum() <= ((scaled - anchors) ** 2).sum()


def test_certain_anchors_are_a_fixed_point():
    """Without scatter the expected distances are the anchors' own: the anchors have zero stress and stay."""
    rng = np.random.default_rng(1)
    anchors = rng.uniform(size=(300, 2)) * [4.0, 1.0] + 7
    start = anchors + rng.normal(scale=0.05, size=anchors.shape)
    out = expected_distance_layout(start, anchors, np.zeros(300), np.ones(300), n_steps=200)
    np.testing.assert_allclose(out, anchors, atol=1e-3)


def test_layout_is_seeded_and_zero_steps_is_the_input():
    truth, anchors, spread = _shrunk(n=400)
    conf = np.ones(400)
    a = expected_distance_layout(anchors, anchors, spread, conf, random_state=3)
    b = expected_distance_layout(anchors, anchors, spread, conf, random_state=3)
    c = expected_distance_layout(anchors, anchors, spread, conf, random_state=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(expected_distance_layout(truth, anchors, spread, conf, n_steps=0), truth)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spread": -np.ones(50)}, "spread"),
        ({"spread": np.ones(49)}, "same 50 cells"),
        ({"confidence": np.zeros(50)}, "confidence"),
        ({"n_steps": -1}, "n_steps"),
        ({"n_partners": 0}, "n_partners"),
    ],
)
def test_layout_bad_input(kwargs, match):
    rng = np.random.default_rng(0)
    args = {
        "layout": rng.uniform(size=(50, 2)),
        "anchors": rng.uniform(size=(50, 2)),
        "spread": np.ones(50),
        "confidence": np.ones(50),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        expected_distance_layout(**args)
