"""Nearest neighbours among coordinates: exact, and the same in any units and at any origin."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.spatial import cKDTree

import gearsx as gx
from gearsx.geometry._knn import TIE_TOLERANCE, group_knn, knn_without_self, tree_knn


def _hex_lattice(n_side: int) -> np.ndarray:
    """Return a Visium-like hexagonal lattice of spacing 1 (six equidistant neighbours per ring)."""
    i, j = np.meshgrid(np.arange(n_side), np.arange(n_side))
    return np.column_stack([(i + 0.5 * (j % 2)).ravel(), (j * np.sqrt(3) / 2).ravel()])


def _frames(xy: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "micrometres": xy * 137.3,
        "x0.01": xy * 0.01,
        "shifted": xy + np.array([1e4, -3.7e3]),
        # Visium-like pixels stored as float32: the rounding of a coordinate is about 1e-7 of the extent
        "float32 pixels": xy.astype(np.float32) * np.float32(137.3) + np.float32(1017.0),
    }


def test_matches_a_brute_force_search_up_to_near_ties():
    rng = np.random.default_rng(0)
    xy = rng.uniform(size=(400, 2))
    dist, idx = knn_without_self(cKDTree(xy), xy, 9)
    full = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    np.fill_diagonal(full, np.inf)
    expect = np.argsort(full, axis=1)[:, :10]
    near = np.sort(full, axis=1)[:, :10]
    np.testing.assert_allclose(dist, near[:, :9], rtol=0, atol=TIE_TOLERANCE)
    tied = (np.diff(near, axis=1) <= TIE_TOLERANCE).any(axis=1)  # two distances within the tolerance
    assert 0 < tied.sum() < 5  # this seed holds one such row: its two near-equal spots go by index
    assert np.array_equal(idx[~tied], expect[~tied, :9])
    for i in np.flatnonzero(tied):
        assert set(idx[i]) <= set(expect[i])


@pytest.mark.parametrize("k", [6, 7, 12, 13])
def test_lattice_neighbours_do_not_depend_on_units_or_origin(k):
    """k = 7 and 13 cut through a ring of six or twelve equidistant spots: the tie goes by index."""
    xy = _hex_lattice(15)
    base = knn_without_self(cKDTree(xy), xy, k)[1]
    for name, other in _frames(xy).items():
        got = knn_without_self(cKDTree(other), other, k)[1]
        assert np.array_equal(got, base), name
    # an interior spot: its first ring, then the lowest-indexed spots of the tied second ring
    i = 7 * 15 + 7
    d = np.linalg.norm(xy - xy[i], axis=1)
    d[i] = np.inf
    rings = np.round(d, 9)
    expect = np.lexsort((np.arange(len(xy)), rings))[:k]
    assert list(base[i]) == list(expect)


def test_spatial_edges_are_the_same_in_any_units_and_a_tie_is_widened_to_the_end():
    xy = _hex_lattice(12)
    groups = np.repeat(["a", "b"], len(xy) // 2)
    base = set(zip(*gx.geometry.spatial_edges(xy, n_neighbors=7, groups=groups), strict=True))
    for name, other in _frames(xy).items():
        assert set(zip(*gx.geometry.spatial_edges(other, n_neighbors=7, groups=groups), strict=True)) == base, name
    # twenty points on one circle around a centre: every neighbour of the centre is tied at once
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    circle = np.vstack([[0.0, 0.0], np.column_stack([np.cos(angles), np.sin(angles)])]) * 3.3 + 50.0
    assert list(knn_without_self(cKDTree(circle), circle, 4)[1][0]) == [1, 2, 3, 4]


def test_duplicated_points_still_exclude_themselves():
    xy = np.vstack([_hex_lattice(6), _hex_lattice(6)[:5]])  # five spots twice
    _, idx = knn_without_self(cKDTree(xy), xy, 3)
    assert not (idx == np.arange(len(xy))[:, None]).any()
    assert idx[0, 0] == 36  # the duplicate comes first, at distance 0


def test_outside_points_find_their_nearest_tree_points_ties_by_index():
    xy = _hex_lattice(10)
    rng = np.random.default_rng(1)
    points = np.vstack([rng.uniform(0, 9, size=(50, 2)), xy[[33, 55]] + 1e-9])  # two sit on a spot
    dist, idx = tree_knn(cKDTree(xy), points, 8)
    full = np.linalg.norm(points[:, None] - xy[None], axis=2)
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :8], rtol=0, atol=1e-8)
    expect = np.lexsort((np.broadcast_to(np.arange(len(xy)), full.shape), np.round(full, 6)), axis=1)[:, :8]
    assert np.array_equal(idx, expect)
    for other in _frames(xy).values():
        scale = (other[1, 0] - other[0, 0]) / (xy[1, 0] - xy[0, 0])
        moved = points * scale + (other[0] - xy[0] * scale)
        assert np.array_equal(tree_knn(cKDTree(other), moved, 8)[1][-2:], idx[-2:])


def test_minisets_and_their_neighbour_lists_do_not_depend_on_units_or_origin():
    xy = _hex_lattice(30)
    base = gx.geometry.MinisetSampler(xy)
    draws = [base.sample(seed).tolist() for seed in range(5)]
    full = knn_without_self(cKDTree(xy), xy, 24)[1]
    rows = np.asarray(draws[0])
    local = {g: i for i, g in enumerate(rows)}
    knn_global = np.vectorize(lambda g: local.get(g, -1))(full[rows])
    lists = gx.geometry.knn_indices(xy[rows], 8, knn_global=knn_global)
    for name, other in _frames(xy).items():
        sampler = gx.geometry.MinisetSampler(other)
        assert [sampler.sample(seed).tolist() for seed in range(5)] == draws, name
        assert np.array_equal(gx.geometry.knn_indices(other[rows], 8, knn_global=knn_global), lists), name


@pytest.mark.parametrize(("label", "other"), [("lonely", "big"), (7, 1)])
def test_a_group_too_small_is_named_as_the_user_wrote_it(label, other):
    xy = np.random.default_rng(0).uniform(size=(12, 2))
    groups = np.array([label] + [other] * 11)  # labels as NumPy holds them: str_ / int64
    with pytest.raises(
        ValueError, match=rf"in group {re.escape(repr(label))}; found 1\. Lower `n_spatial_neighbors`"
    ) as err:
        list(group_knn(xy, groups, 8, name="n_spatial_neighbors"))
    assert "np." not in str(err.value)


def test_cosine_searches_find_the_most_similar_rows_whatever_their_lengths():
    """Cosine neighbours (searched as Euclidean ones between unit rows) against a brute-force cosine ranking."""
    from gearsx.geometry._knn import knn, knn_query

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 12)) * rng.uniform(0.01, 100, size=(300, 1))  # lengths over four decades
    query = rng.normal(size=(200, 12)) * rng.uniform(0.01, 100, size=(200, 1))
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    cos = unit(query) @ unit(ref).T
    np.testing.assert_array_equal(knn_query(query, ref, 7, metric="cosine"), np.argsort(-cos, axis=1)[:, :7])
    idx, dist = knn(ref, 5, metric="cosine")
    own = unit(ref) @ unit(ref).T
    np.fill_diagonal(own, -np.inf)
    np.testing.assert_array_equal(idx, np.argsort(-own, axis=1)[:, :5])
    np.testing.assert_allclose(dist, 1 - np.take_along_axis(own, idx, axis=1), atol=1e-12)  # cosine distances
    # a Euclidean search would rank by length too: the long rows would never be anyone's nearest
    assert not np.array_equal(knn_query(query, ref, 7), np.argsort(-cos, axis=1)[:, :7])
