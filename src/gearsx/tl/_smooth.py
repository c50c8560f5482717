"""``gx.tl.spatial_smooth``: average a representation over physical neighbours (for spatial domains)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from gearsx._anndata import check_distinct_positions, check_key_added, resolve_slide_key, set_obs_rep, write_record
from gearsx._keys import Key
from gearsx._utils import check_coords, check_positive_int, checks_flags
from gearsx.geometry._knn import group_knn

from ._domains import _block

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["spatial_smooth", "spatial_smoothing_operator"]

logger = logging.getLogger(__name__)


def spatial_smoothing_operator(
    coords: np.ndarray, n_neighbors: int = 6, *, groups: np.ndarray | None = None
) -> sp.csr_matrix:
    """Row-stochastic sparse operator that averages each point with its ``n_neighbors`` nearest ones.

    Row ``i`` holds ``1 / (n_neighbors + 1)`` at ``i`` and at its ``n_neighbors`` nearest
    physical neighbours (KD-tree; duplicated coordinates handled), searched within its own
    group only when ``groups`` is given. ``n_neighbors=0`` gives the identity. The matrix has
    ``n * (n_neighbors + 1)`` non-zeros, never ``n * n``.

    Parameters
    ----------
    coords
        ``(n, d)`` coordinates.
    n_neighbors
        Neighbours averaged with each point.
    groups
        Group (e.g. slide) of each point; neighbours never cross groups.

    Returns
    -------
    ``(n, n)`` CSR matrix whose rows sum to one.
    """
    coords = check_coords(coords, name="coords")
    n = len(coords)
    n_neighbors = check_positive_int(n_neighbors, name="n_neighbors", minimum=0)
    rows, cols = [np.arange(n)], [np.arange(n)]
    if n_neighbors > 0:
        for sel, nbr in group_knn(coords, groups, n_neighbors, name="n_neighbors"):
            rows.append(np.repeat(sel, n_neighbors))
            cols.append(nbr.ravel())
    r, c = np.concatenate(rows), np.concatenate(cols)
    w = np.full(len(r), 1.0 / (n_neighbors + 1))
    return sp.csr_matrix((w, (r, c)), shape=(n, n))


@checks_flags
def spatial_smooth(
    adata: AnnData,
    use_rep: str = Key.embedding,
    *,
    n_neighbors: int = 6,
    spatial_key: str = Key.spatial,
    slide_key: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Average a representation over each spot's physical neighbours (neighbourhood aggregation).

    Every observation's ``obsm[use_rep]`` row is replaced by the mean over itself and its
    ``n_neighbors`` nearest neighbours in ``obsm[spatial_key]`` (within its slide when
    ``slide_key`` is given). This is the neighbourhood-averaging step that spatial-domain
    methods such as BANKSY (Singhal et al., 2024), SpaGCN and GraphST build in: domains are
    tissue regions, so a spot's neighbourhood is evidence about its domain, and averaging
    removes spot-level noise that otherwise splits a layer. Clustering the result, e.g.
    ``cluster_domains(use_rep='X_gears_smoothed', method='mclust')``, gives domains that
    follow the tissue; ``cluster_domains(refine=True)`` is the weaker, label-level version of
    the same idea (a vote after clustering instead of averaging before it).

    It is a sparse product ``W @ X`` with ``W`` from ``spatial_smoothing_operator``
    (``n * (n_neighbors + 1)`` non-zeros), so it scales linearly with the number of spots.
    Written here rather than taken from squidpy because squidpy's spatial graph
    (``sq.gr.spatial_neighbors``) excludes the spot itself and is stored in ``obsp``; this
    function needs neither and leaves your ``obsp`` untouched.

    Parameters
    ----------
    adata
        Annotated data matrix with coordinates in ``obsm[spatial_key]``.
    use_rep
        ``obsm`` key of the representation to smooth (or ``'X'``, densified).
    n_neighbors
        Physical neighbours averaged with each spot; 6 is the first ring of a Visium
        hexagonal grid, 0 returns the representation unchanged.
    spatial_key
        ``obsm`` key of the coordinates.
    slide_key
        ``obs`` column with slides; neighbours never cross slides. ``None`` takes the column
        recorded by :func:`gearsx.tl.fit_encoder` (or :func:`gearsx.pp.mean_center_per_slide`,
        :func:`gearsx.pp.prepare`) in ``uns``; with no record the data are one slide (a warning
        names ``obs['slide']``, ``obs['library_id']``, ``obs['batch']`` or a similar column when it
        holds several values).
    key_added
        ``obsm`` key for the result (default ``f'{use_rep}_smoothed'``); parameters go to
        ``uns[key_added]``.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None`` (or the copy) — sets ``obsm[key_added]`` (float32, same shape as the input) and
    ``uns[key_added]['params']``.

    Examples
    --------
    >>> import gearsx as gx
    >>> st, _ = gx.datasets.simulate_tissue(n_slides=2, random_state=0)
    >>> st.obsm["X_gears"] = st.X[:, :20].toarray()
    >>> gx.tl.spatial_smooth(st, slide_key="slide")
    >>> st.obsm["X_gears_smoothed"].shape == st.obsm["X_gears"].shape
    True
    >>> gx.tl.cluster_domains(st, method="mclust", use_rep="X_gears_smoothed", n_clusters=5)
    """
    if key_added is not None:
        check_key_added(key_added, spatial_key=spatial_key)
    if spatial_key not in adata.obsm:
        msg = (
            f"`spatial_key={spatial_key!r}` is not in `adata.obsm`; available: {list(adata.obsm.keys())}. "
            "Spatial smoothing needs physical coordinates."
        )
        raise KeyError(msg)
    coords = check_coords(adata.obsm[spatial_key], name=f"obsm[{spatial_key!r}]")
    groups = None
    slide_key = resolve_slide_key(adata, slide_key)
    if slide_key is not None:
        groups = adata.obs[slide_key].to_numpy()
    if n_neighbors:  # n_neighbors=0 is the identity: positions are not read
        check_distinct_positions(coords, groups, spatial_key=spatial_key, slide_key=slide_key)
    x = _block(adata, use_rep)
    x = x.toarray() if sp.issparse(x) else x
    w = spatial_smoothing_operator(coords, n_neighbors, groups=groups)
    out = np.asarray(w @ np.asarray(x, dtype=np.float64), dtype=np.float32)
    key_added = Key.smoothed(use_rep) if key_added is None else key_added
    adata = adata.copy() if copy else adata
    set_obs_rep(adata, out, obsm=key_added)
    params = {"use_rep": use_rep, "n_neighbors": n_neighbors, "spatial_key": spatial_key, "slide_key": slide_key}
    write_record(adata, key_added, params)
    logger.info("spatial_smooth: obsm[%r] averaged over %d neighbours -> obsm[%r]", use_rep, n_neighbors, key_added)
    return adata if copy else None
