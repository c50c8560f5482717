"""Reference anchoring: place query cells in the frame of a spatial reference through a shared embedding.

Three steps, numpy/scipy only:

1. :func:`~gearsx.geometry.match_reference` — each query's ``k`` most similar reference spots (cosine in the shared
   embedding), their similarity-weighted mean position (the *anchor*) and how scattered those spots are (the anchor's
   *spread*: small when every good match sits in one place, large when similar spots are found all
   over the tissue).
2. :func:`~gearsx.geometry.match_score` — one number per query set: how similar the matches are, between a shuffled
   null (``0``) and the reference's own spots matched to each other (``1``). It says whether the
   query looks like the reference's tissue at all.
3. :func:`~gearsx.geometry.fuse_anchor` — one sparse linear solve that keeps each cell near its anchor (weighted by
   confidence) and, between neighbours of an intrinsic layout, the offsets of that layout after a
   local similarity alignment to the anchors, weighted by how well that alignment fits. The anchor is globally right but locally noisy; the
   intrinsic layout is locally right but may be globally bent; the fusion takes the global frame from
   the first and the local arrangement from the second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from gearsx._anndata import check_finite_matrix
from gearsx._utils import (
    as_rng,
    check_coords,
    check_fraction,
    check_nonnegative_number,
    check_positive_int,
    check_positive_number,
    checks_flags,
    index_dtype,
)

from ._cover import checked_patch
from ._gauge import _similarity_fit
from ._knn import knn_index, knn_matrix, knn_query, unit_rows

__all__ = ["AnchorMatch", "fuse_anchor", "match_reference", "match_score", "patch_residuals", "shuffled"]


@dataclass
class AnchorMatch:
    """The result of :func:`~gearsx.geometry.match_reference` (arrays over query cells)."""

    #: ``(n, k)`` indices of the matched reference spots, most similar first.
    indices: np.ndarray
    #: ``(n, k)`` cosine similarities of those matches.
    similarity: np.ndarray
    #: ``(n, 2)`` anchor positions: the weighted mean coordinate of the matched spots.
    anchors: np.ndarray
    #: ``(n, k)`` weight of each match in its anchor (rows sum to one).
    weights: np.ndarray
    #: ``(m, 2)`` coordinates of the reference rows that ``indices`` point into.
    reference_coords: np.ndarray

    @property
    def spread(self) -> np.ndarray:
        """``(n,)`` RMS distance of the matched spots to their centre (equal weights; reference units).

        How scattered the matches are, whatever their weights. Computed when asked for, in blocks
        of rows: it gathers ``n x k`` coordinates, which the matches themselves do not need.
        """
        return match_spread(self.reference_coords, self.indices)


_BLOCK = 16_384
#: Default weight of the expression in :func:`match_reference` (and in ``gx.tl.reconstruct``'s anchors).
EXPRESSION_WEIGHT = 0.75
#: Default temperature of the matches' weights in :func:`match_reference` (and in ``gx.tl.reconstruct``'s anchors).
TEMPERATURE = 0.5


def _cosine_sd(q, r: np.ndarray, rng: np.random.Generator) -> float:
    """Return the standard deviation of the cosine similarity between sampled query and reference rows."""
    qs = unit_rows(q[np.sort(rng.choice(q.shape[0], min(q.shape[0], 1_000), replace=False))], np.float32)
    rs = r[np.sort(rng.choice(len(r), min(len(r), 2_000), replace=False))]
    sd = float((qs @ rs.T).std())
    return sd if sd > 1e-12 else 1.0


@checks_flags
def match_reference(
    query: np.ndarray,
    reference: np.ndarray,
    reference_coords: np.ndarray,
    *,
    k: int = 20,
    query_expression: np.ndarray | sp.spmatrix | None = None,
    reference_expression: np.ndarray | sp.spmatrix | None = None,
    expression_weight: float = EXPRESSION_WEIGHT,
    temperature: float | None = TEMPERATURE,
    exclude_self: bool = False,
    random_state: int = 0,
) -> AnchorMatch:
    """Match every query row to its ``k`` most similar reference rows (cosine) and anchor it there.

    With expression profiles of both sides (``query_expression`` and ``reference_expression``),
    the similarity is a weighted sum of the cosine similarities in the embedding and in the
    expression, each divided by its spread (the standard deviation of that cosine over a seeded
    sample of query-reference pairs) so that the weight means what it says:
    ``(1 - w) cos_emb / sd_emb + w cos_expr / sd_expr`` with ``w = expression_weight``. The
    embedding carries what the encoder learned to share between spots and cells (it bridges
    platforms: scRNA-seq against a spatial panel); the expression keeps what the encoder smoothed
    away. Weighed together they localised cells better than the embedding alone on every data set of
    our benchmarks (see :doc:`/anchoring`). The search is the same cosine search on the two unit vectors concatenated
    with weights, exact up to 50,000 reference rows and approximate above.

    The anchor is the mean coordinate of the ``k`` matches weighted by a softmax of their
    similarity, ``exp((s - s_best) / temperature)``, with ``s`` in units of the similarity's
    spread (without expression, ``cos_emb / sd_emb``): a match one spread less similar than the
    best counts ``exp(-1 / temperature)`` times as much. ``temperature=None`` weighs the matches
    equally. Weighted, the anchors are less drawn towards the middle of the matched spots; on
    our benchmarks they ordered distances better than the plain mean on every same-tissue set
    (see :doc:`/anchoring`).

    Parameters
    ----------
    query
        ``(n, d)`` query embeddings (single cells in the shared embedding).
    reference
        ``(m, d)`` reference embeddings (spots).
    reference_coords
        ``(m, 2)`` reference coordinates.
    k
        Matches per query.
    query_expression, reference_expression
        Optional ``(n, g)`` and ``(m, g)`` expression of the same genes in the same order (dense or
        sparse; e.g. ``layers['gears_centered']`` of :func:`gearsx.pp.mean_center_per_slide`, whose
        slides share their data set's gene means). They are compared as given, not centred against
        each other.
        Give both or neither. The query's rows are densified in blocks, never all at once.
    expression_weight
        Weight ``w`` of the expression similarity, in ``[0, 1]`` (``0``: the embedding alone,
        ``1``: the expression alone); used only with both expression arguments.
    temperature
        Softmax temperature of the matches' weights, in units of the similarity's spread (see
        above); ``None``: equal weights (the plain mean of the matched spots).
    exclude_self
        The query *is* the reference (row ``i`` is spot ``i``): leave each spot out of its own
        matches (leave-one-out, for calibration).
    random_state
        Seed of the approximate search (above 50,000 reference rows) and of the pairs the
        similarity spreads are measured on.

    Returns
    -------
    An :class:`~gearsx.geometry.AnchorMatch`; its ``similarity`` is the cosine similarity in the
    embedding of the chosen matches, whichever views chose them.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import match_reference
    >>> xy = np.random.default_rng(0).uniform(size=(500, 2))
    >>> emb = np.c_[np.cos(3 * xy), np.sin(3 * xy)]  # an embedding that varies smoothly in space
    >>> m = match_reference(emb[:50] + 0.01, emb, xy, k=5)
    >>> float(np.abs(m.anchors - xy[:50]).max()) < 0.1
    True
    """
    q, r = np.asarray(query), np.asarray(reference)
    xy = check_coords(reference_coords, name="reference_coords", n_dims=2)
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        msg = f"`query` and `reference` must be 2-D with the same width; got {q.shape} and {r.shape}."
        raise ValueError(msg)
    check_finite_matrix(q, "query", "impute or remove those cells first")
    check_finite_matrix(r, "reference", "impute or remove those spots first")
    if len(xy) != len(r):
        msg = f"`reference_coords` has {len(xy)} rows for {len(r)} reference rows."
        raise ValueError(msg)
    k = check_positive_int(k, name="k")
    extra = int(exclude_self)
    if k + extra > len(r):
        msg = f"`k`={k} needs at least {k + extra} reference rows; got {len(r)}."
        raise ValueError(msg)
    if temperature is not None:
        temperature = check_positive_number(temperature, name="temperature", hint=" or None (equal weights)")
    w = _checked_expression(query_expression, reference_expression, expression_weight, len(q), len(r))
    qn, rn = unit_rows(q, np.float32), unit_rows(r, np.float32)
    rng = as_rng(random_state)
    if w == 0.0:
        idx = knn_query(qn, rn, k + extra, metric="cosine", random_state=random_state)
        # each view's cosine counts per unit of its spread: the similarity the temperature is measured in
        c_emb, c_expr = (np.sqrt(1.0 / _cosine_sd(qn, rn, rng)) if temperature is not None else 1.0), 0.0
    else:
        xr = unit_rows(reference_expression, np.float32)
        c_emb = np.sqrt((1.0 - w) / _cosine_sd(qn, rn, rng))
        c_expr = np.sqrt(w / _cosine_sd(query_expression, xr, rng))
        search = knn_index(np.hstack([c_emb * rn, c_expr * xr]), metric="cosine", random_state=random_state)
        idx = np.empty((len(qn), k + extra), dtype=np.int64)
        for start in range(0, len(qn), _BLOCK):
            rows = slice(start, start + _BLOCK)
            block = np.hstack([c_emb * qn[rows], c_expr * unit_rows(query_expression[rows], np.float32)])
            idx[rows] = search(block, k + extra)
    if exclude_self:
        own = idx == np.arange(len(idx))[:, None]
        # drop the row itself where it was found, else the least similar match
        keep = ~own
        keep[~own.any(1), -1] = False
        idx = idx[keep].reshape(len(idx), k)
    sim = _match_cosines(qn, rn, idx, normalise=False)
    weights = np.empty(idx.shape)
    anchors = np.empty((len(idx), xy.shape[1]))
    # in blocks of rows: the scores, their softmax and the matched coordinates ((n, k, 2), 0.8 GB at a
    # million cells and 50 matches) of all cells at once had set the peak memory of a million-cell run
    for start in range(0, len(idx), _BLOCK):
        rows = slice(start, start + _BLOCK)
        if temperature is None:
            weights[rows] = 1.0 / idx.shape[1]
        else:
            score = c_emb**2 * sim[rows]
            if w > 0:
                score += c_expr**2 * _match_cosines(query_expression[rows], xr, idx[rows])
            score -= score.max(1, keepdims=True)
            score /= temperature
            np.exp(score, out=score)
            weights[rows] = score / score.sum(1, keepdims=True)
        anchors[rows] = np.einsum("nk,nkd->nd", weights[rows], xy[idx[rows]])
    return AnchorMatch(indices=idx, similarity=sim, anchors=anchors, weights=weights, reference_coords=xy)


def match_spread(coords: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Return the RMS distance of each row's matched spots (``coords[indices]``, equal weights) to their centre.

    In blocks of rows: the matched coordinates of every row at once are ``(n, k, 2)``, with as
    large temporaries (1 GB at a million cells and 20 matches).
    """
    out = np.empty(len(indices))
    for start in range(0, len(indices), _BLOCK):
        rows = slice(start, start + _BLOCK)
        pts = coords[indices[rows]]
        out[rows] = np.sqrt(((pts - pts.mean(1, keepdims=True)) ** 2).sum(-1).mean(1))
    return out


def _match_cosines(query, reference_units: np.ndarray, idx: np.ndarray, *, normalise: bool = True) -> np.ndarray:
    """Cosine of each query row with its matched reference rows (``idx``; ``normalise=False``: ``query`` is unit already).

    In blocks of at most 16,384 rows and about 16M numbers: ``reference_units[idx]`` whole would be an
    ``(n, k, d)`` copy (10 GB at a million cells).
    """
    out = np.empty(idx.shape, dtype=np.float64)
    rows_per_block = max(1, min(_BLOCK, 2**24 // (idx.shape[1] * reference_units.shape[1])))
    for start in range(0, len(idx), rows_per_block):
        rows = slice(start, start + rows_per_block)
        q = unit_rows(query[rows], np.float32) if normalise else query[rows]
        out[rows] = np.einsum("ng,nkg->nk", q, reference_units[idx[rows]])
    return out


def _checked_expression(query_expression, reference_expression, weight, n_query: int, n_reference: int) -> float:
    """Validate the optional expression view of :func:`match_reference`; return the weight to use (``0``: none)."""
    if (query_expression is None) != (reference_expression is None):
        msg = "Give both `query_expression` and `reference_expression`, or neither."
        raise ValueError(msg)
    w = check_fraction(weight, name="expression_weight")
    if query_expression is None:
        return 0.0
    qs, rs = query_expression.shape, reference_expression.shape
    if len(qs) != 2 or len(rs) != 2 or qs[1] != rs[1] or qs[0] != n_query or rs[0] != n_reference:
        msg = (
            f"`query_expression` {qs} and `reference_expression` {rs} must have one row per query ({n_query}) and "
            f"per reference row ({n_reference}) and the same genes (columns)."
        )
        raise ValueError(msg)
    check_finite_matrix(query_expression, "query_expression", "impute or remove those cells first")
    check_finite_matrix(reference_expression, "reference_expression", "impute or remove those spots first")
    return w


def match_score(query_similarity: np.ndarray, null_similarity: np.ndarray, reference_similarity: np.ndarray) -> float:
    """How much a query looks like the reference, from the similarity of its matches (``0`` to ``1``).

    ``(median(q) - median(null)) / (median(ref) - median(null))`` on the mean similarity of each
    row's matches: ``1`` when queries match the reference as well as the reference's own spots match
    each other (leave-one-out), ``0`` when they match no better than a shuffled null (each embedding
    dimension permuted across queries, which keeps every marginal and breaks what makes a profile).

    Parameters
    ----------
    query_similarity, null_similarity, reference_similarity
        ``AnchorMatch.similarity`` of the queries, of the shuffled queries and of the reference
        matched to itself: 2-D ``(rows, matches)``, finite, at least one row each.

    Returns
    -------
    The score, clipped to ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import match_score
    >>> null, ref = np.full((100, 20), 0.0), np.full((100, 20), 0.8)
    >>> match_score(np.full((100, 20), 0.4), null, ref)  # halfway between the null and the reference
    0.5
    """
    names = ("query_similarity", "null_similarity", "reference_similarity")
    sims = (query_similarity, null_similarity, reference_similarity)
    q, null, ref = (float(np.median(check_coords(s, name=n).mean(1))) for s, n in zip(sims, names, strict=True))
    return float(np.clip((q - null) / max(ref - null, 1e-12), 0.0, 1.0))


def shuffled(x: np.ndarray, random_state: int = 0, n_rows: int | None = None) -> np.ndarray:
    """Permute every column of ``x`` independently across rows (the null of :func:`~gearsx.geometry.match_score`).

    Each column keeps its values (its marginal); what ties a row's values together is lost.

    Parameters
    ----------
    x
        ``(rows, features)`` array.
    random_state
        Seed of the permutations.
    n_rows
        At least this many null rows: with fewer rows in ``x``, each column's values are drawn with
        replacement into ``n_rows`` rows (the same marginals), so that a null of a handful of cells
        has a stable mean and spread; ``None``: as many rows as ``x``.

    Returns
    -------
    A permuted copy of ``x`` (``max(len(x), n_rows)`` rows).

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import shuffled
    >>> x = np.arange(12).reshape(4, 3)
    >>> bool((np.sort(shuffled(x, random_state=0), axis=0) == x).all())  # every column keeps its values
    True
    >>> shuffled(x, random_state=0, n_rows=10).shape  # a few rows drawn into more
    (10, 3)
    """
    rng = as_rng(random_state)
    x = np.asarray(x)
    if x.ndim != 2:
        msg = f"`x` must be a 2-D (rows, features) array; got shape {x.shape}."
        raise ValueError(msg)
    if n_rows is not None and check_positive_int(n_rows, name="n_rows") > len(x):
        if len(x) == 0:
            msg = "`x` has no rows to draw a null from."
            raise ValueError(msg)
        return x[rng.integers(0, len(x), size=(n_rows, x.shape[1])), np.arange(x.shape[1])]
    rows = np.arange(len(x), dtype=index_dtype(len(x)))
    return np.take_along_axis(x, rng.permuted(np.tile(rows[:, None], (1, x.shape[1])), axis=0), axis=0)


def _local_alignments(y: np.ndarray, a: np.ndarray, w: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit, for every cell, the 2 x 2 similarity map from its neighbourhood's intrinsic offsets to its anchors'.

    Weighted Procrustes with scale, reflections allowed, vectorised over cells. Also returns each
    fit's coefficient of determination (the share of the anchors' local spread that the mapped
    intrinsic offsets explain, clipped to ``[0, 1]``): how far the two layouts agree around the cell.

    Every fit needs only weighted sums over the neighbourhood (of ``1``, ``y``, ``a``, ``a y^T``,
    ``|y|^2``, ``|a|^2``), so they come from one sparse product of the ``(n, n)`` neighbourhood
    matrix with an ``(n, 11)`` table, not from ``(n, q, 2)`` gathers (29 s -> 6 s at a million
    cells). The centred sums are differences of raw sums; both layouts are centred first so that the
    raw sums stay small (the maps agree with a per-cell fit to about 1e-12).
    """
    n = len(nbr)
    y = y - y.mean(0)
    a = a - a.mean(0)
    table = np.column_stack(
        [np.ones(n), y, a, a[:, 0] * y[:, 0], a[:, 0] * y[:, 1], a[:, 1] * y[:, 0], a[:, 1] * y[:, 1],
         (y**2).sum(1), (a**2).sum(1)]
    )  # fmt: skip
    sums = knn_matrix(nbr, w[nbr]) @ table  # (n, 11): weighted sums over each cell's neighbourhood
    wsum = np.maximum(sums[:, 0], 1e-12)
    sy, sa = sums[:, 1:3], sums[:, 3:5]
    cross = sums[:, 5:9].reshape(n, 2, 2) - sa[:, :, None] * sy[:, None, :] / wsum[:, None, None]  # sum w a_c y_c^T
    syy = np.maximum(sums[:, 9] - (sy**2).sum(1) / wsum, 0.0)  # sum w |y_c|^2
    saa = np.maximum(sums[:, 10] - (sa**2).sum(1) / wsum, 0.0)  # sum w |a_c|^2
    u, s, vt = np.linalg.svd(cross)
    rot = u @ vt  # orthogonal, reflections allowed (the intrinsic layout's handedness is arbitrary)
    fit = s.sum(1)  # trace(rot^T cross)
    scale = fit / np.maximum(syy, 1e-12)
    resid = saa - 2.0 * scale * fit + scale**2 * syy  # sum w |a_c - scale rot y_c|^2
    r2 = 1.0 - resid / np.maximum(saa, 1e-12)
    return rot * scale[:, None, None], np.clip(r2, 0.0, 1.0)


def fuse_anchor(
    intrinsic: np.ndarray,
    anchors: np.ndarray,
    confidence: np.ndarray,
    *,
    n_neighbors: int = 10,
    weight: float = 1.0,
) -> np.ndarray:
    """Fuse anchor positions (global frame) with an intrinsic layout (local arrangement) in one solve.

    Minimises ``sum_i c_i |x_i - a_i|^2 + weight * sum_i g_i^2 sum_{j in N_i} |x_j - x_i - M_i (y_j - y_i)|^2``
    where ``y`` is the intrinsic layout, ``N_i`` the ``n_neighbors`` nearest cells of ``i`` in it,
    ``a`` the anchors, ``c`` the confidences, ``M_i`` the similarity map fitted (weighted
    Procrustes) from the offsets of ``i``'s ``4 n_neighbors`` nearest cells in ``y`` to the same
    cells' anchor offsets, and ``g_i`` that fit's coefficient of determination: the intrinsic
    offsets around a cell count as far as they agree with the anchors there. Where the intrinsic
    layout is locally wrong (as for dissociated cells whose patches mix layers) the anchors win;
    where it explains the anchors' local arrangement, it sharpens it. The
    normal equations are a sparse, symmetric positive-definite system (two right-hand sides),
    solved by conjugate gradients, so the cost is linear in the number of cells. Written here
    because it is the specific alignment problem of this method (a local-tangent-space alignment
    with a data term), not a general solver.

    Parameters
    ----------
    intrinsic
        ``(n, 2)`` intrinsic layout (any pose and scale).
    anchors
        ``(n, 2)`` anchor positions in the reference frame.
    confidence
        ``(n,)`` non-negative weight of each anchor (at least one positive).
    n_neighbors
        Neighbours per cell whose intrinsic offsets are kept (the local maps use four times as many);
        at most ``n - 1`` are used, so on fewer cells every other cell is a neighbour.
    weight
        Weight of the intrinsic offsets against the anchors (``0``: the anchors themselves).

    Returns
    -------
    ``(n, 2)`` fused positions in the reference frame.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import fuse_anchor
    >>> rng = np.random.default_rng(0)
    >>> xy = rng.uniform(size=(400, 2))
    >>> bent = np.c_[xy[:, 0], xy[:, 1] + 0.5 * xy[:, 0] ** 2]  # locally right, globally bent
    >>> noisy = xy + rng.normal(scale=0.1, size=xy.shape)  # globally right, locally noisy
    >>> out = fuse_anchor(bent, noisy, np.ones(400))
    >>> bool(np.abs(out - xy).mean() < np.abs(noisy - xy).mean())
    True
    """
    from scipy.sparse.linalg import cg
    from scipy.spatial import cKDTree

    y = check_coords(intrinsic, name="intrinsic", n_dims=2)
    a = check_coords(anchors, name="anchors", n_dims=2)
    c = np.asarray(confidence, dtype=np.float64)
    n = len(a)
    if len(y) != n or c.shape != (n,):
        msg = f"`intrinsic`, `anchors` and `confidence` must describe the same {n} cells; got {len(y)}, {n}, {c.shape}."
        raise ValueError(msg)
    if not np.isfinite(c).all() or (c < 0).any() or c.max() <= 0:
        msg = "`confidence` must be finite, non-negative and positive somewhere."
        raise ValueError(msg)
    weight = check_nonnegative_number(weight, name="weight")
    q = min(check_positive_int(n_neighbors, name="n_neighbors", minimum=2), n - 1)
    if weight == 0 or q < 2:
        return a.copy()
    # The local maps are fitted on a wider neighbourhood than the offsets they transform: a map
    # estimated from ~4x as many anchors averages their local noise away.
    q_map = min(4 * q, n - 1)
    nbr_map = cKDTree(y).query(y, k=q_map + 1, workers=-1)[1]  # includes the cell itself (distance 0)
    maps, agreement = _local_alignments(y, a, c, nbr_map)  # (n, 2, 2), (n,)
    nbr = nbr_map[:, : q + 1]
    rows = np.repeat(np.arange(n), q)
    cols = nbr[:, 1:].ravel()
    # target offsets x_j - x_i = M_i (y_j - y_i)
    d = np.einsum("nij,nqj->nqi", maps, y[nbr[:, 1:]] - y[:, None]).reshape(-1, 2)
    m = len(rows)
    # difference operator D (m x n): (D x)_e = x_j - x_i
    diff = sp.csr_matrix(
        (np.r_[np.ones(m), -np.ones(m)], (np.r_[np.arange(m), np.arange(m)], np.r_[cols, rows])), shape=(m, n)
    )
    # each cell's offsets count as much as its neighbourhood of the intrinsic layout agrees with the anchors
    w_edge = weight * agreement[rows] ** 2
    system = (sp.diags(c) + diff.T @ sp.diags(w_edge) @ diff).tocsr()
    rhs = c[:, None] * a + diff.T @ (w_edge[:, None] * d)
    out = np.empty_like(a)
    diag = system.diagonal()
    precond = sp.diags(1.0 / np.maximum(diag, 1e-12))
    for dim in range(2):
        sol, _ = cg(system, rhs[:, dim], x0=a[:, dim], M=precond, rtol=1e-8, maxiter=2000)
        out[:, dim] = sol
    return out


def localisation(spread: np.ndarray, coords: np.ndarray, k: int, random_state: int) -> float:
    """How localised matched spots are: ``1 - median(spread) / median(spread of k random spots)``.

    ``1``: every cell's matches sit on one spot; ``0``: they are scattered like spots drawn at random
    from the slide, so a single cell's anchor says little about where it sits (averages over many
    cells, such as a cell type's mean position, can still be right).
    """
    rng = np.random.default_rng(random_state)
    pts = coords[rng.integers(0, len(coords), size=(512, k))]
    rand = np.sqrt(((pts - pts.mean(1, keepdims=True)) ** 2).sum(-1).mean(1))
    return float(1.0 - np.median(spread) / max(float(np.median(rand)), 1e-12))


def global_agreement(intrinsic: np.ndarray, anchors: np.ndarray) -> float:
    """Share of the anchors' spread that the intrinsic layout explains after one similarity transform (R²).

    ``1``: the two layouts have the same global shape; near ``0``: they disagree at large scale, so
    one of them is wrong there (which one, this number cannot tell).
    """
    a = anchors - anchors.mean(0)
    return float(1.0 - ((anchors - _similarity_fit(intrinsic, anchors)) ** 2).sum() / max(float((a**2).sum()), 1e-300))


def patch_residuals(patches: list[np.ndarray], patch_coords: list[np.ndarray], layout: np.ndarray) -> np.ndarray:
    """Per-cell disagreement between the patches that predicted a cell and the final layout.

    Every patch is aligned to the layout of its cells by a similarity transform (Procrustes with
    scale and reflections); a cell's residual is the RMS, over the patches that hold it, of the
    distance between its aligned patch position and its layout position (layout units). Cells on
    which overlapping patches disagree, or that the solve had to move, score high.

    Parameters
    ----------
    patches
        One integer index array per patch.
    patch_coords
        One ``(len(patch), 2)`` array of predicted coordinates per patch.
    layout
        ``(n, 2)`` final layout.

    Returns
    -------
    ``(n,)`` residuals (``0`` for a cell in no patch).

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import patch_residuals
    >>> layout = np.random.default_rng(0).uniform(size=(6, 2))
    >>> patches = [np.arange(4), np.arange(2, 6)]
    >>> coords = [2 * layout[:4] + 1, layout[2:, ::-1]]  # each patch a similar copy of the layout
    >>> patch_residuals(patches, coords, layout).round(6).tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    xy = check_coords(layout, name="layout", n_dims=2)
    if len(patches) != len(patch_coords):
        msg = f"`patches` and `patch_coords` must pair up; got {len(patches)} and {len(patch_coords)}."
        raise ValueError(msg)
    total = np.zeros(len(xy))
    count = np.zeros(len(xy))
    for p, (idx, y) in enumerate(zip(patches, patch_coords, strict=True)):
        idx, y = checked_patch(p, idx, y, len(xy))
        target = xy[idx]
        total[idx] += ((_similarity_fit(y, target) - target) ** 2).sum(1)
        count[idx] += 1
    return np.sqrt(total / np.maximum(count, 1))
