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


def test_morton_order_uses_every_coordinate(rng):
    """A 3-D section is ordered in 3-D (the z column was ignored), and 2-D orders are the interleaved codes."""
    layers = np.repeat(np.arange(4.0), 1024)
    x = np.c_[np.tile(rng.uniform(size=(1024, 2)), (4, 1)), layers]  # four identical layers stacked in z
    order = gx.metrics.morton_order(x)
    step = np.linalg.norm(np.diff(x[order], axis=0), axis=1)
    assert np.median(step) < 0.2  # neighbours in the order are neighbours in 3-D, not other layers' twins
    changes = np.count_nonzero(np.diff(layers[order]))
    assert changes < 1000  # the order visits the layers in long runs (ignoring z: a change at nearly every step)
    # 2-D: the ranks of a 2 x 2 grid by the interleaved code (x the low bit, y the high bit)
    grid = np.array([[1.0, 1.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert gx.metrics.morton_order(grid, bits=1).tolist() == [1, 3, 2, 0]
    with pytest.raises(ValueError, match="`bits`=40 for 2 coordinates needs 80 bits"):  # shifted past 64 bits
        gx.metrics.morton_order(grid, bits=40)
    with pytest.raises(ValueError, match="`bits` must be an integer >= 1"):  # 0 returned the input order
        gx.metrics.morton_order(grid, bits=0)


def test_attention_recall_refuses_what_it_cannot_score():
    xy = np.random.default_rng(0).uniform(size=(12, 2))
    att = np.full((12, 12), 1 / 12)
    assert float(gx.metrics.attention_recall(att, xy, k=3)["entropy"]) == pytest.approx(np.log(12))
    with pytest.raises(ValueError, match="`k`=11 must be smaller than n - 1 = 11"):  # was clipped: recall 1 always
        gx.metrics.attention_recall(att, xy, k=11)
    with pytest.raises(ValueError, match="finite, non-negative"):  # NaN weights gave a recall and a NaN entropy
        gx.metrics.attention_recall(np.full((12, 12), np.nan), xy, k=3)


def test_distortion_bad_input():
    with pytest.raises(ValueError, match="same rows"):
        gx.metrics.distortion_matrix(np.zeros((5, 2)), np.zeros((6, 2)))
