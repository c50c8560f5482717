import numpy as np
import pytest

import gearsx as gx


def test_distortion_zero_for_similar_layouts(rng):
    x = rng.uniform(size=(2000, 2))
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    m, order = gx.metrics.distortion_matrix(5 * x @ rot + 3, x, n_blocks=16)
    assert m.shape == (16, 16)
    assert np.sort(order).tolist() == list(range(2000))
    assert float(m.max()) < 1e-9


def test_distortion_localises_a_misplaced_region(rng):
    x = rng.uniform(size=(4000, 2))
    pred = x.copy()
    corner = (x[:, 0] < 0.25) & (x[:, 1] < 0.25)
    pred[corner] += np.array([0.7, 0.7])  # move one corner region elsewhere
    m, order = gx.metrics.distortion_matrix(pred, x, n_blocks=16, n_per_block=64)
    blocks = np.array_split(order, 16)
    in_corner = np.array([corner[b].mean() > 0.9 for b in blocks])
    assert in_corner.any()
    far = ~in_corner
    # rows of the moved region are distorted against the rest; the rest among itself is not
    assert m[np.ix_(in_corner, far)].mean() > 5 * m[np.ix_(far, far)].mean()
    assert m[np.ix_(in_corner, in_corner)].mean() < 0.3 * m[np.ix_(in_corner, far)].mean()  # kept its own shape


def test_morton_order_is_local(rng):
    x = rng.uniform(size=(4096, 2))
    order = gx.metrics.morton_order(x)
    step = np.linalg.norm(np.diff(x[order], axis=0), axis=1)
    random_step = np.linalg.norm(np.diff(x, axis=0), axis=1)
    assert np.median(step) < 0.2 * np.median(random_step)


def test_distortion_bad_input():
    with pytest.raises(ValueError, match="same rows"):
        gx.metrics.distortion_matrix(np.zeros((5, 2)), np.zeros((6, 2)))
