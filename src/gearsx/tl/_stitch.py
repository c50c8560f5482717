from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gearsx._anndata import check_key_added, write_record
from gearsx._keys import Key
from gearsx._utils import check_positive_int, checks_flags, resolve_client

if TYPE_CHECKING:
    from anndata import AnnData
    from distributed import Client

__all__ = ["stitch"]

logger = logging.getLogger(__name__)


@checks_flags
def stitch(
    adata: AnnData,
    patches: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    key_added: str = Key.result,
    n_communities: int | None = None,
    client: Client | None = None,
    random_state: int = 0,
    copy: bool = False,
    **kwargs,
) -> AnnData | None:
    """Stitch overlapping patch geometries into a global layout and write it to ``adata``.

    A thin wrapper of :func:`gearsx.geometry.stitch_patches` (see there for the
    algorithm and the keyword arguments).

    Parameters
    ----------
    adata
        Annotated data matrix whose observations the patches index (positions in ``obs``).
    patches
        Sequence of ``(indices, coords)`` pairs: integer positions of a patch's cells and
        their predicted 2-D coordinates in that patch's own pose and scale.
    key_added
        Prefix of the written keys (an existing entry under these keys is replaced, with a log message).
    n_communities
        Stitch this many communities of patches separately, then align them (``None``: one stitch of
        all patches; see :func:`gearsx.geometry.stitch_patches` and :doc:`/scaling`).
    client
        A running :class:`distributed.Client`: with ``n_communities``, each community is stitched as a
        task on its workers. Default: ``gx.settings.dask_client`` (``None``: in process); the layout is the
        same either way.
    random_state
        Seed of the stitching.
    copy
        Return a modified copy instead of writing to ``adata``.
    **kwargs
        Passed to :func:`gearsx.geometry.stitch_patches`.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes

    ``obsm[f'X_{key_added}_spatial']``
        Global 2-D layout (centred, unit RMS).
    ``obsp[f'{key_added}_distances']``
        Sparse stitched distances (CSR), in the units of the layout.
    ``obsp[f'{key_added}_connectivities']``
        Confidence weights of the stitched edges (CSR).
    ``uns[key_added]``
        ``params`` and ``diagnostics`` (patch reliability, overlap disagreement, solver
        stress, edge residual quantiles, components).

    Examples
    --------
    >>> import numpy as np, anndata as ad, gearsx as gx
    >>> xy = np.random.default_rng(0).uniform(size=(300, 2))
    >>> adata = ad.AnnData(np.zeros((300, 1), dtype=np.float32))
    >>> halves = [np.flatnonzero(xy[:, 0] < 0.6), np.flatnonzero(xy[:, 0] > 0.4)]
    >>> gx.tl.stitch(adata, [(i, 3 * xy[i]) for i in halves])
    >>> adata.obsm["X_gears_spatial"].shape
    (300, 2)
    """
    random_state = check_positive_int(random_state, name="random_state", minimum=0)
    from gearsx.geometry import stitch_patches

    check_key_added(key_added, owner="gx.tl.stitch")
    patches = list(patches)
    if not patches or any(len(p) != 2 for p in patches):
        msg = "`patches` must be a non-empty sequence of (indices, coords) pairs."
        raise ValueError(msg)
    client = resolve_client(client)
    if n_communities is not None:
        n_communities = check_positive_int(n_communities, name="n_communities")
    adata = adata.copy() if copy else adata
    res = stitch_patches(
        [p[0] for p in patches],
        [p[1] for p in patches],
        adata.n_obs,
        n_communities=n_communities,
        client=client if n_communities is not None else None,
        random_state=random_state,
        **kwargs,
    )
    obsm_key = Key.layout(key_added)
    dist_key, conn_key = Key.distances(key_added), Key.connectivities(key_added)
    for slot, key in ((adata.obsm, obsm_key), (adata.obsp, dist_key), (adata.obsp, conn_key), (adata.uns, key_added)):
        if key in slot:
            logger.info("replacing existing %r", key)
    adata.obsm[obsm_key] = res.X
    adata.obsp[dist_key] = res.distances
    adata.obsp[conn_key] = res.weights
    diag = dict(res.diagnostics)
    write_record(
        adata,
        key_added,
        {
            "random_state": random_state,
            "n_patches": len(patches),
            "n_communities": n_communities,
            "executor": "in-process" if client is None or n_communities is None else f"dask {client.scheduler.address}",
            **kwargs,
        },
        diagnostics=diag,
        distances_key=dist_key,
        connectivities_key=conn_key,
    )
    return adata if copy else None
