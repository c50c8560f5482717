"""Lay anchored cells out by their expected pairwise distances (stress majorisation on sampled pairs)."""

from __future__ import annotations

import numpy as np
from scipy.special import i0e, i1e

from gearsx._utils import as_rng, check_coords, check_positive_int

from ._compiled import compiled
from ._gauge import _similarity_fit

#: Sampled partners per cell at most, and pairs in all at most (the partners per cell fall to keep it).
N_PARTNERS = 100
MAX_PAIRS = 20_000_000
#: Pairs handled at once in a step (bounds the step's temporary arrays).
_BLOCK_PAIRS = 2_000_000


def expected_distance(mean_distance: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Return the expected distance between two uncertain positions in the plane.

    Each position is a mean with isotropic scatter; ``mean_distance`` is the distance between the
    means and ``variance`` the sum of the two positions' mean squared distances to their means
    (``s_i^2 + s_j^2``). The difference is then normal with per-axis variance
    ``sigma^2 = variance / 2``, and its length follows a Rice distribution, whose mean is
    ``sigma sqrt(pi / 2) L_{1/2}(-m^2 / (2 sigma^2))`` (``L_{1/2}`` the Laguerre function,
    written with exponentially scaled Bessel functions so that it stays finite). It is never
    below ``mean_distance`` and tends to it as the scatter vanishes.

    Parameters
    ----------
    mean_distance
        Distances between the two means (non-negative), any shape.
    variance
        ``s_i^2 + s_j^2`` for each pair (non-negative), broadcastable with ``mean_distance``.

    Returns
    -------
    The expected distances, in the broadcast shape of ``mean_distance`` and ``variance``.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import expected_distance
    >>> expected_distance(np.array([0.0, 10.0]), np.array([2.0, 0.0])).round(4)  # sqrt(pi / 2), 10
    array([ 1.2533, 10.    ])
    """
    m = np.asarray(mean_distance, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    try:
        np.broadcast_shapes(m.shape, v.shape)
    except ValueError:
        msg = (
            f"`variance` (shape {v.shape}) must broadcast with `mean_distance` (shape {m.shape}): one value per "
            "pair, or one for all."
        )
        raise ValueError(msg) from None
    if not (np.all(v >= 0) and np.all(m >= 0)):  # a negative variance read as no scatter; NaN fails here too
        msg = "`mean_distance` and `variance` must be non-negative (and not NaN)."
        raise ValueError(msg)
    scattered = v > 1e-12 * np.maximum(m**2, 1e-300)
    sigma = np.sqrt(np.where(scattered, v, 1.0) / 2)
    h = m**2 / (4 * sigma**2)
    rice = sigma * np.sqrt(np.pi / 2) * ((1 + 2 * h) * i0e(h) + 2 * h * i1e(h))
    return np.where(scattered, rice, m)


def expected_distance_layout(
    layout: np.ndarray,
    anchors: np.ndarray,
    spread: np.ndarray,
    confidence: np.ndarray,
    *,
    n_steps: int = 3,
    n_partners: int = N_PARTNERS,
    random_state: int = 0,
) -> np.ndarray:
    """Move anchored cells so that their distances match the distances expected from their uncertainty.

    An anchor is a cell's expected position; a weakly matched cell's anchor sits near the middle of
    its matched spots, so the distances between anchors are shorter than the distances between the
    cells they stand for, and shorter the more uncertain the cells are. Here each cell ``i`` is a
    position scattered around its anchor ``a_i`` by ``spread[i]`` (root-mean-square distance,
    reference units), the distance expected between two cells is
    :func:`expected_distance` of their anchors' distance and ``s_i^2 + s_j^2``, and the layout is
    moved by stress majorisation towards those distances, starting from ``layout``: each step
    replaces every cell by the mean over its pairs of the partner's position plus the current offset
    rescaled to the target length (the localised SMACOF update of Gansner, Koren and North, 2004).
    The pairs are ``n_partners`` uniformly sampled partners per cell (fewer where ``n`` times that
    would exceed 20 million pairs), so a step costs time and memory linear in the number of cells,
    never ``n x n``. The result is put back in the anchors' frame by the similarity transform
    (rotation, scale, translation; weighted by ``confidence``) that brings it closest to them, so
    the layout stays in the reference frame, as close to the expected positions as its shape
    allows. Written here because it is this method's specific target (distances between
    uncertain positions) on sampled pairs; scikit-learn's ``smacof`` needs the full ``n x n``
    matrix. The round scatter stands in for each cell's matches; the distance expected between two
    cells' matched spots themselves (``k x k`` distances per pair instead of one) placed the cells
    at most 0.004 Spearman better on our benchmarks (see :doc:`/anchoring`).

    Parameters
    ----------
    layout
        ``(n, 2)`` starting layout, in the reference frame.
    anchors
        ``(n, 2)`` expected positions.
    spread
        ``(n,)`` root-mean-square distance of each cell from its anchor (non-negative).
    confidence
        ``(n,)`` non-negative weight of each cell in the final similarity transform.
    n_steps
        Majorisation steps (``0``: ``layout`` unchanged).
    n_partners
        Sampled partners per cell (at least 1).
    random_state
        Seed of the partners.

    Returns
    -------
    ``(n, 2)`` layout in the reference frame.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import expected_distance_layout
    >>> from gearsx.metrics import stress1
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.uniform(size=(500, 2))
    >>> spread = rng.uniform(0.02, 0.4, 500)  # uncertain cells' anchors are drawn to the middle:
    >>> anchors = 0.5 + (truth - 0.5) / (1 + (spread / 0.1) ** 2)[:, None]
    >>> out = expected_distance_layout(anchors, anchors, spread, np.ones(500))
    >>> bool(stress1(out, truth) < stress1(anchors, truth) - 0.1)
    True
    """
    x = check_coords(layout, name="layout", n_dims=2).copy()
    a = check_coords(anchors, name="anchors", n_dims=2)
    s = np.asarray(spread, dtype=np.float64)
    c = np.asarray(confidence, dtype=np.float64)
    n = len(x)
    if len(a) != n or s.shape != (n,) or c.shape != (n,):
        msg = f"`layout`, `anchors`, `spread` and `confidence` must describe the same {n} cells; got {len(a)}, {s.shape}, {c.shape}."
        raise ValueError(msg)
    if not np.isfinite(s).all() or (s < 0).any():
        msg = "`spread` must be finite and non-negative."
        raise ValueError(msg)
    if not np.isfinite(c).all() or (c < 0).any() or c.max() <= 0:
        msg = "`confidence` must be finite, non-negative and positive somewhere."
        raise ValueError(msg)
    n_steps = check_positive_int(n_steps, name="n_steps", minimum=0)
    q = min(check_positive_int(n_partners, name="n_partners"), max(1, MAX_PAIRS // max(n, 1)), n - 1)
    if n_steps == 0 or q < 1:
        return x
    partners = as_rng(random_state).integers(0, n - 1, size=(n, q))
    partners += partners >= np.arange(n)[:, None]  # never the cell itself
    target = np.empty((n, q))
    for c0, c1 in _blocks(n, q):
        j = partners[:, c0:c1]
        target[:, c0:c1] = expected_distance(np.linalg.norm(a[:, None] - a[j], axis=-1), s[:, None] ** 2 + s[j] ** 2)
    degree = q + np.bincount(partners.ravel(), minlength=n).astype(np.float64)
    step = compiled(_majorisation_step)
    for _ in range(n_steps):
        total = np.zeros((n, 2))
        step(x, partners, target, total)
        x = total / degree[:, None]
    return _similarity_fit(x, a, weights=c, reflection=False)


def _majorisation_step(x: np.ndarray, partners: np.ndarray, target: np.ndarray, total: np.ndarray) -> None:
    """Add each pair's two proposals to ``total``: for the pair (i, j), each end at the target length from the other.

    Cell ``i``'s proposal is ``x_j + (x_i - x_j) t / |x_i - x_j|``, its partner's the mirror image
    ``x_i - (x_i - x_j) t / |x_i - x_j|``. One compiled pass over the pairs: the same update written
    with arrays allocated ``(n, partners, 2)`` temporaries and scattered the partners' side with
    ``np.bincount``; at 300,000 cells and 100 partners a step took about 3 s that way, 0.6 s this way.
    """
    n, q = partners.shape
    for i in range(n):
        xi0, xi1 = x[i, 0], x[i, 1]
        for t in range(q):
            j = partners[i, t]
            d0, d1 = xi0 - x[j, 0], xi1 - x[j, 1]
            scale = target[i, t] / max(np.sqrt(d0 * d0 + d1 * d1), 1e-300)
            m0, m1 = d0 * scale, d1 * scale
            total[i, 0] += x[j, 0] + m0
            total[i, 1] += x[j, 1] + m1
            total[j, 0] += xi0 - m0
            total[j, 1] += xi1 - m1


def _blocks(n: int, q: int):
    """Column ranges of the ``(n, q)`` partner table holding about ``_BLOCK_PAIRS`` pairs each."""
    step = max(1, _BLOCK_PAIRS // max(n, 1))
    for c0 in range(0, q, step):
        yield c0, min(q, c0 + step)
