"""Balanced entropic transport of query cells onto reference spots (POT): a second kind of anchor."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from gearsx._utils import as_rng, check_coords, check_positive_int, check_positive_number

from ._anchor import _checked_expression

__all__ = ["TransportAnchors", "transport_anchors"]

#: Cells the plan is solved on at most: above, a seeded sample of this many; every other cell's row
#: comes from the plan's dual (see :func:`transport_anchors`). On the benchmark's splits a sample of
#: 1,000 cells matched the full solve within 0.002 on the mean of every metric.
SOLVE_CELLS = 2_000
#: Reference spots per slide at most (the solve holds a dense ``sample x spots`` cost).
MAX_SPOTS = 50_000
#: The range of ``epsilon`` the bisection searches, on costs scaled to ``[0, 1]`` (at the lower end the
#: kernel's smallest entry, ``exp(-1 / epsilon)``, is still a normal float64).
EPSILON_RANGE = (2e-3, 1.0)
_BISECTION_STEPS = 12
_BLOCK_ENTRIES = 4_000_000


@dataclass
class TransportAnchors:
    """The result of :func:`~gearsx.geometry.transport_anchors` (arrays over query cells)."""

    #: ``(n, 2)`` each cell's barycentre of the reference coordinates under its row of the plan.
    anchors: np.ndarray
    #: ``(n,)`` RMS distance of the reference spots to that barycentre, under the same weights.
    spread: np.ndarray
    #: The entropic regularisation the bisection found (costs scaled to ``[0, 1]``).
    epsilon: float
    #: Mean entropy (nats) of the solved cells' rows, normalised to sum to one.
    entropy: float
    #: Cells the plan was solved on (the rest come from its dual).
    n_solved: int
    #: ``(n, top_k)`` with ``top_k`` given: each cell's heaviest spots under its row of the plan (rows of
    #: the reference, heaviest first) ...
    spots: np.ndarray | None = None
    #: ... and their weights, renormalised to sum to one per cell.
    spot_weights: np.ndarray | None = None


def require_pot():
    """Return POT's ``ot`` module, or raise an ImportError saying how to install it (the ``transport`` extra)."""
    try:
        import ot
    except ImportError:
        msg = "Transport anchors need POT; install it with `pip install 'gearsx[transport]'` (or `pip install pot`)."
        raise ImportError(msg) from None
    return ot


def _row_entropy(w: np.ndarray) -> float:
    """Mean entropy (nats) of the rows of a row-stochastic matrix."""
    return float(-(w * np.log(np.maximum(w, 1e-300))).sum(1).mean())


def transport_anchors(
    query_expression: np.ndarray | sp.spmatrix,
    reference_expression: np.ndarray | sp.spmatrix,
    reference_coords: np.ndarray,
    *,
    target_entropy: float,
    top_k: int | None = None,
    random_state: int = 0,
) -> TransportAnchors:
    """Anchor every query cell at its barycentre under a balanced entropic transport plan onto the spots.

    The plan moves equal mass from every cell to equal mass on every spot (uniform marginals) at
    the cost of the Euclidean distance between the profiles, scaled to ``[0, 1]``; it is POT's
    ``ot.sinkhorn``. Its regularisation ``epsilon`` is chosen by bisection (in ``log epsilon``,
    within ``2e-3`` to ``1``) so that the plan's rows, normalised, hold ``target_entropy``
    nats on average: the spread of a cell's weights is then that of another weighting it is
    compared with, here gearsx's own match weights, and only the balance differs. The balance
    keeps spots that resemble every cell (a mean-like profile) from drawing all of them, which
    matching each cell on its own cannot see (see :doc:`/anchoring`).

    Above 2,000 cells the plan is solved on a seeded sample of that many; every
    cell's weights then come from the solved plan's dual, its column scaling ``v``: spot ``j``
    weighs ``exp(-C_ij / epsilon) v_j``, normalised over the spots, which is exactly the plan's row
    for a sampled cell. So the dense cost is ``sample x spots`` and every other cell costs one pass
    over the spots.

    Parameters
    ----------
    query_expression
        ``(n, g)`` query profiles (dense or sparse; e.g. ``layers['gears_centered']``).
    reference_expression
        ``(m, g)`` reference profiles of the same genes in the same order; at most
        50,000 rows.
    reference_coords
        ``(m, 2)`` reference coordinates.
    target_entropy
        Mean entropy (nats) of the normalised rows to aim at, positive; above what the largest
        ``epsilon`` gives, that ``epsilon`` is used, and below what the smallest gives, the smallest.
    top_k
        Also keep each cell's ``top_k`` heaviest spots and their weights, renormalised to sum to
        one (``spots`` and ``spot_weights`` of the result; at most the number of spots): a sparse
        summary of the plan's rows, which are dense. Default: none kept.
    random_state
        Seed of the sample the plan is solved on.

    Returns
    -------
    A :class:`~gearsx.geometry.TransportAnchors`.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import transport_anchors
    >>> xy = np.random.default_rng(0).uniform(size=(300, 2))
    >>> expr = np.c_[np.cos(3 * xy), np.sin(3 * xy)]  # expression that varies smoothly in space
    >>> t = transport_anchors(expr[:100] + 0.01, expr, xy, target_entropy=2.0)
    >>> round(t.entropy, 1), bool(np.abs(t.anchors - xy[:100]).mean() < 0.1)
    (2.0, True)
    """
    from sklearn.metrics.pairwise import euclidean_distances  # here: `import gearsx` stays light

    ot = require_pot()
    xy = check_coords(reference_coords, name="reference_coords", n_dims=2)
    n, m = query_expression.shape[0], len(xy)
    if n == 0:
        msg = "`query_expression` has no rows (cells) to anchor."
        raise ValueError(msg)
    # the same checks as the expression view of the matches: 2-D, the same genes, one row per spot, finite
    _checked_expression(query_expression, reference_expression, 0.0, n, m)
    if m > MAX_SPOTS:
        msg = (
            f"Transport anchors hold a dense cells x spots cost; the reference has {m} spots, more than "
            f"{MAX_SPOTS}. Match on the embedding and expression alone (anchor_transport=False)."
        )
        raise ValueError(msg)
    target = check_positive_number(target_entropy, name="target_entropy")
    if top_k is not None:
        top_k = check_positive_int(top_k, name="top_k")
        if top_k > m:
            msg = f"`top_k`={top_k} exceeds the reference's {m} spots; pass at most {m}."
            raise ValueError(msg)
    random_state = check_positive_int(random_state, name="random_state", minimum=0)
    # float64: scikit-learn then computes every block's distances in float64 too, where the kernel
    # exp(-cost / epsilon) does not underflow at the smallest epsilon
    r = np.asarray(reference_expression.toarray() if sp.issparse(reference_expression) else reference_expression,
                   dtype=np.float64)  # fmt: skip
    r2 = (r**2).sum(1)[None, :]  # the spots' squared norms, once for every block of cells
    rows = np.arange(n)
    if n > SOLVE_CELLS:
        rows = np.sort(as_rng(random_state).choice(n, SOLVE_CELLS, replace=False))
    cost = euclidean_distances(query_expression[rows], r, Y_norm_squared=r2)
    low, scale = float(cost.min()), float(np.ptp(cost))
    scale = scale if scale > 0 else 1.0
    cost = (cost - low) / scale
    a, b = np.full(len(rows), 1.0 / len(rows)), np.full(m, 1.0 / m)

    def solve(eps: float):
        with warnings.catch_warnings():  # POT warns when it stops at its iteration cap; the entropy decides
            warnings.simplefilter("ignore")
            plan, log = ot.sinkhorn(a, b, cost, eps, numItermax=3000, stopThr=1e-6, log=True)
        if not np.isfinite(plan).all() or plan.sum() <= 0:
            return None
        w = plan / np.maximum(plan.sum(1, keepdims=True), 1e-300)
        return _row_entropy(w), np.log(np.maximum(log["v"], 1e-300))

    lo, hi = np.log(EPSILON_RANGE[0]), np.log(EPSILON_RANGE[1])
    best = None  # (|entropy - target|, epsilon, entropy, log v)
    for _ in range(_BISECTION_STEPS):
        eps = float(np.exp((lo + hi) / 2))
        out = solve(eps)
        if out is None:  # numerically too sharp: a larger epsilon
            lo = np.log(eps)
            continue
        h, log_v = out
        if best is None or abs(h - target) < best[0]:
            best = (abs(h - target), eps, h, log_v)
        if h > target:
            hi = np.log(eps)
        else:
            lo = np.log(eps)
    if best is None:  # pragma: no cover - every epsilon in range failed, which scaled costs do not do
        msg = "The transport plan did not converge at any epsilon in range."
        raise RuntimeError(msg)
    _, eps, entropy, log_v = best
    centre = xy.mean(0)
    xc = xy - centre  # centred, so that the spread's difference of squares keeps its precision
    anchors = np.empty((n, 2))
    second = np.empty(n)  # each cell's weighted mean squared distance of the spots from the centre
    sq = (xc**2).sum(1)
    spots = np.empty((n, top_k), dtype=np.int64) if top_k else None
    spot_weights = np.empty((n, top_k)) if top_k else None
    step = max(1, _BLOCK_ENTRIES // m)
    for start in range(0, n, step):
        block = slice(start, min(n, start + step))
        z = log_v[None, :] - (euclidean_distances(query_expression[block], r, Y_norm_squared=r2) - low) / (scale * eps)
        z -= z.max(1, keepdims=True)
        w = np.exp(z)
        w /= w.sum(1, keepdims=True)
        anchors[block] = w @ xc
        second[block] = w @ sq
        if top_k:
            heavy = np.argpartition(-w, top_k - 1, axis=1)[:, :top_k]  # top_k = m: every spot, in some order
            hw = np.take_along_axis(w, heavy, axis=1)
            order = np.argsort(-hw, axis=1, kind="stable")
            spots[block] = np.take_along_axis(heavy, order, axis=1)
            spot_weights[block] = np.take_along_axis(hw, order, axis=1) / hw.sum(1, keepdims=True)
    spread = np.sqrt(np.maximum(second - (anchors**2).sum(1), 0.0))
    anchors += centre
    return TransportAnchors(
        anchors=anchors, spread=spread, epsilon=eps, entropy=entropy, n_solved=len(rows),
        spots=spots, spot_weights=spot_weights,
    )  # fmt: skip
