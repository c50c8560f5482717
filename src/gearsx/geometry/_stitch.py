"""Stitching of overlapping patch geometries into one global layout (see :ref:`gears-reconstruction`).

Written here rather than taken from a library: no maintained package solves sparse,
confidence-weighted distance geometry with per-patch unknown pose and scale at the
scale of a million cells. The pieces are standard — Procrustes-free scale
harmonisation by least squares on log distances, weighted medians, Landmark
Isomap / landmark MDS (de Silva & Tenenbaum) and a Huber stress majorised with
L-BFGS — and everything is sparse and ``O(edges)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from gearsx._utils import as_rng, check_nonnegative_number, check_positive_int, check_positive_number

from ._stitch_scales import checked_patches, consensus_edges, patch_edge_table, patch_scales
from ._stitch_solve import solve_components

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["StitchResult", "stitch_patches"]

logger = logging.getLogger(__name__)


@dataclass
class StitchResult:
    """Result of :func:`~gearsx.geometry.stitch_patches`.

    Attributes
    ----------
    X
        Global 2-D layout, ``(n_obs, 2)``, centred with unit RMS norm.
    distances
        Symmetric CSR matrix of stitched distances (in the units of ``X``).
    weights
        Symmetric CSR matrix of the edges' confidence weights in ``(0, 1]``.
    diagnostics
        ``patch_reliability``, ``patch_disagreement`` (per patch), ``overlap_disagreement``
        (median), ``solver_stress`` (normalised stress of ``X`` on the stitched edges),
        ``edge_residual_quantiles`` (of ``|log(d_X / d_stitched)|`` at 0.5, 0.9, 0.99),
        ``n_edges``, ``n_components`` and ``components`` (component label per cell). A stitch by
        communities reports each patch's reliability and disagreement within its community, the
        median of the communities' overlap disagreements, and ``n_communities``,
        ``community_sizes``, ``community_stress`` and ``median_communities_per_cell``.
    """

    X: np.ndarray
    distances: sp.csr_matrix
    weights: sp.csr_matrix
    diagnostics: dict = field(default_factory=dict)


def stitch_patches(
    patch_indices: list[np.ndarray],
    patch_coords: list[np.ndarray],
    n_obs: int,
    *,
    k_edges: int = 10,
    n_long: int = 2,
    min_shared: int = 5,
    max_dispersion: float = 0.5,
    min_reliability: float = 0.1,
    huber_delta: float = 0.1,
    residual: str = "absolute",
    anchor: float = 1e-3,
    n_landmarks: int = 64,
    max_iter: int = 150,
    n_communities: int | None = None,
    client: Client | None = None,
    random_state: int = 0,
) -> StitchResult:
    """Stitch overlapping patch geometries into one global 2-D layout.

    Each patch is a set of global cell indices with that patch's predicted 2-D
    coordinates, in an arbitrary pose and scale. The steps (see :ref:`gears-reconstruction`):

    1. Gauge-fix every patch (centre, unit RMS) and extract its edge set: kNN in the
       patch geometry (``k_edges``) plus ``n_long`` random longer-range edges per cell.
    2. Harmonise patch scales: for every pair of patches sharing at least
       ``min_shared`` cells, the median log-ratio of their distances between shared
       cells; per-patch log scales by sparse least squares (mean zero).
    3. Patch reliability ``a_p = exp(-disagreement_p / median disagreement)``, where the
       disagreement of two patches is the mean ``|log d_p - log d_q|`` over their shared
       pairs (after scale harmonisation), and a patch's disagreement is the
       overlap-weighted median over its partners (robust to a corrupted neighbour).
    4. Aggregate each edge measured by several patches with a reliability-weighted
       median of log distances; drop edges whose weighted dispersion (mean absolute
       deviation of log distances) exceeds ``max_dispersion`` or whose patches are
       unreliable (``min_reliability``); confidence
       ``(1 - exp(-count)) exp(-dispersion / 0.1)`` times the mean reliability.
    5. Landmark Isomap initialisation on the stitched graph, then a weighted Huber
       stress solve (residuals in units of the median edge length, threshold
       ``huber_delta``) with a small anchor to the initialisation. Above 50,000 cells the
       geodesics follow each cell's 10 shortest edges and the solve numbers the cells along
       a Morton curve of its start (for the cache; the same solve otherwise).

    Disconnected stitched graphs are not collapsed: each connected component is
    solved on its own, components are laid side by side, a warning is emitted and
    the labels are reported in ``diagnostics['components']``.

    With ``n_communities``, the patches are first grouped into that many communities of
    overlapping patches (a Voronoi partition of the graph of patches sharing cells); every
    community is stitched on its own by the steps above, in this process or as a task on
    ``client``, and the communities' layouts are put in one frame by a least-squares similarity
    alignment on the cells they share, then averaged per cell (see :doc:`/scaling`). No process
    then holds more than one community's problem, at the price of no global stress solve across
    communities.

    Parameters
    ----------
    patch_indices
        One integer array of global cell indices per patch (no repeats within a patch).
    patch_coords
        One ``(len(indices), 2)`` coordinate array per patch.
    n_obs
        Number of cells; every cell must be in at least one patch.
    k_edges, n_long
        Within-patch edge set.
    min_shared
        Minimum number of shared cells for two patches to be compared (at least 2).
    max_dispersion
        Edges whose measurements disagree more (in log units) are dropped.
    min_reliability
        Edges whose measuring patches have a mean reliability below this fraction of
        the median patch reliability are dropped.
    huber_delta
        Huber threshold on the distance residuals (in the units set by ``residual``).
    residual
        ``'absolute'``: residuals ``d_X - d`` in units of the median stitched edge length
        (Kruskal's stress: long edges weigh as much as short ones); ``'relative'``:
        ``(d_X - d) / d``, which fits short edges more tightly. Predicted short distances are
        the least reliable part of a patch, which is why ``'absolute'`` is the default: on the
        simulator the relative solve fell below its own initialisation while the absolute one
        improved on it.
    anchor
        Weight of the anchor to the Landmark Isomap initialisation.
    n_landmarks
        Landmarks of the initialisation, at least 3 (one shortest-path search over the stitched graph
        each; above 50,000 cells, over each cell's 10 shortest edges).
    max_iter
        L-BFGS iterations of the stress solve (``0``: the initialisation alone).
    n_communities
        Stitch this many communities of patches separately and align them (``None`` or 1: one stitch).
    client
        A running :class:`distributed.Client` to stitch the communities on (with ``n_communities``);
        ``None``: in this process. The layout is the same either way.
    random_state
        Seed of the long-range edges and of the landmarks.

    Returns
    -------
    :class:`StitchResult`

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import stitch_patches
    >>> rng = np.random.default_rng(0)
    >>> xy = rng.uniform(size=(400, 2))
    >>> idx = [np.flatnonzero(xy[:, 0] < 0.6), np.flatnonzero(xy[:, 0] > 0.4)]
    >>> res = stitch_patches(idx, [xy[i] * 5 for i in idx], 400)
    >>> res.X.shape
    (400, 2)
    """
    n_obs = check_positive_int(n_obs, name="n_obs", minimum=3)
    if residual not in ("absolute", "relative"):
        msg = f"`residual` must be 'absolute' or 'relative'; got {residual!r}."
        raise ValueError(msg)
    # Checked here: out of range, most of them gave a layout without a word (a negative Huber
    # threshold, a NaN anchor, one landmark: a 1-D layout on the diagonal), the rest an IndexError.
    k_edges = check_positive_int(k_edges, name="k_edges")
    n_long = check_positive_int(n_long, name="n_long", minimum=0)
    min_shared = check_positive_int(min_shared, name="min_shared", minimum=2)  # a scale ratio needs one distance
    n_landmarks = check_positive_int(n_landmarks, name="n_landmarks", minimum=3)  # a 2-D classical MDS
    max_iter = check_positive_int(max_iter, name="max_iter", minimum=0)  # 0: the initialisation alone
    max_dispersion = check_positive_number(max_dispersion, name="max_dispersion")
    huber_delta = check_positive_number(huber_delta, name="huber_delta")
    min_reliability = check_nonnegative_number(min_reliability, name="min_reliability")
    anchor = check_nonnegative_number(anchor, name="anchor")
    idx_list, y_list = checked_patches(patch_indices, patch_coords, n_obs)
    rng = as_rng(random_state)
    if n_communities is not None:
        n_communities = check_positive_int(n_communities, name="n_communities")
        if client is not None:
            from gearsx._utils import check_client

            check_client(client)
    if n_communities is not None and n_communities > 1 and len(idx_list) > 1:
        from ._stitch_communities import stitch_by_communities

        x, (ei, ej, dist, conf), extra = stitch_by_communities(
            idx_list,
            y_list,
            n_obs,
            n_communities=n_communities,
            min_shared=min_shared,
            random_state=int(random_state) if isinstance(random_state, int | np.integer) else int(rng.integers(2**32)),
            client=client,
            k_edges=k_edges,
            n_long=n_long,
            max_dispersion=max_dispersion,
            min_reliability=min_reliability,
            huber_delta=huber_delta,
            residual=residual,
            anchor=anchor,
            n_landmarks=n_landmarks,
            max_iter=max_iter,
        )
        _, comp = connected_components(sp.coo_matrix((dist, (ei, ej)), shape=(n_obs, n_obs)), directed=False)
        return _result(x, ei, ej, dist, conf, comp, n_obs, extra, len(idx_list))
    edges = patch_edge_table(idx_list, y_list, k_edges, n_long, rng)
    scales = patch_scales(idx_list, y_list, n_obs, min_shared, rng)
    graph = consensus_edges(edges, scales, n_obs, max_dispersion, min_reliability)
    x, comp = solve_components(
        graph,
        n_obs,
        rng,
        n_landmarks=n_landmarks,
        delta=huber_delta,
        anchor=anchor,
        max_iter=max_iter,
        residual=residual,
    )
    extra = {
        "patch_reliability": scales.reliability,
        "patch_disagreement": np.nan_to_num(scales.disagreement, nan=-1.0),
        "patch_log_scale": scales.log_scale,
        "overlap_disagreement": scales.median_disagreement,
        "n_edges_dropped": graph.n_dropped,
        "n_cells_reattached": graph.n_reattached,
    }
    return _result(x, graph.i, graph.j, graph.dist, graph.conf, comp, n_obs, extra, len(idx_list))


def _result(x, ei, ej, dist, conf, comp, n_obs: int, extra: dict, n_patches: int) -> StitchResult:
    """Put a layout in the unit-RMS gauge, scale the stitched distances to it and add the diagnostics."""
    centre = x.mean(0)
    rms = np.sqrt(((x - centre) ** 2).sum(1).mean()) or 1.0
    x = (x - centre) / rms
    # Stitched distances are defined up to a global scale: match them to X by least squares on the edges.
    d_x = np.linalg.norm(x[ei] - x[ej], axis=1)
    dist = dist * float((d_x * dist).sum() / max((dist * dist).sum(), 1e-300))
    resid = np.abs(np.log(np.maximum(d_x, 1e-12) / np.maximum(dist, 1e-12)))
    stress = float(np.sqrt(((d_x - dist) ** 2 * conf).sum() / max((dist**2 * conf).sum(), 1e-300)))

    def sym(values: np.ndarray) -> sp.csr_matrix:
        m = sp.coo_matrix((values, (ei, ej)), shape=(n_obs, n_obs))
        return (m + m.T).tocsr()

    n_comp = int(comp.max()) + 1
    diagnostics = {
        **extra,
        "solver_stress": stress,
        "edge_residual_quantiles": dict(
            zip(("q50", "q90", "q99"), np.quantile(resid, [0.5, 0.9, 0.99]).tolist(), strict=True)
        )
        if len(resid)
        else {},
        "n_edges": int(len(dist)),
        "n_patches": n_patches,
        "n_components": n_comp,
        "components": comp.astype(np.int64),
    }
    logger.info("stitched %d patches: %d edges, stress %.3f, %d components", n_patches, len(dist), stress, n_comp)
    return StitchResult(X=x, distances=sym(dist), weights=sym(conf), diagnostics=diagnostics)
