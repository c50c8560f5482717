"""gx.metrics.domain_scores / spatial_coherence against scikit-learn and known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import gearsx as gx


def test_matches_sklearn_and_drops_unlabelled():
    rng = np.random.default_rng(0)
    truth = rng.choice(["L1", "L2", "L3"], 500).astype(object)
    pred = np.where(rng.random(500) < 0.7, truth, rng.choice(["L1", "L2", "L3"], 500))
    truth_na = truth.copy()
    truth_na[:20] = "NA"
    truth_na[20:30] = None
    out = gx.metrics.domain_scores(truth_na, pred)
    keep = np.arange(500) >= 30
    assert out["n_scored"] == 470
    assert out["n_unlabelled"] == 30
    assert np.isclose(out["ari"], adjusted_rand_score(truth[keep], pred[keep]))
    assert np.isclose(out["nmi"], normalized_mutual_info_score(truth[keep], pred[keep]))
    assert "coherence" not in out


def test_coherence_is_one_for_contiguous_domains_and_chance_for_random():
    xy = np.stack(np.meshgrid(np.arange(50.0), np.arange(50.0)), -1).reshape(-1, 2)
    stripes = (xy[:, 0] // 10).astype(int)
    assert gx.metrics.spatial_coherence(stripes, xy, n_neighbors=4) > 0.9
    shuffled = np.random.default_rng(0).permutation(stripes)
    assert abs(gx.metrics.spatial_coherence(shuffled, xy, n_neighbors=4) - 0.2) < 0.03  # 5 equal labels
    out = gx.metrics.domain_scores(stripes, stripes, spatial=xy)
    assert out["ari"] == 1.0
    assert out["coherence"] > 0.9


def test_errors():
    with pytest.raises(ValueError, match="3 entries.*2"):
        gx.metrics.domain_scores([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="reference label"):
        gx.metrics.domain_scores([None, "NA", None], [0, 1, 1])
    with pytest.raises(ValueError, match="shape \\(2, 2\\)"):
        gx.metrics.spatial_coherence([0, 1, 1], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="needs at least 7 points; got 5"):  # was clipped to 4 neighbours
        gx.metrics.spatial_coherence([0, 0, 1, 1, 1], np.arange(10.0).reshape(5, 2))
