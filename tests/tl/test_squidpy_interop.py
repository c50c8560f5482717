"""Reconstructions work with squidpy as they are (the ``squidpy`` extra, installed by ``make test``)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import gearsx as gx

sq = pytest.importorskip("squidpy", reason="the squidpy extra is not installed (pip install 'gearsx[squidpy]')")


def test_nhood_enrichment_on_a_reconstruction(rng):
    # four planted quadrant domains, reconstructed by stitching two rotated, rescaled halves
    xy = rng.uniform(size=(800, 2))
    adata = ad.AnnData(np.zeros((800, 1), dtype=np.float32))
    adata.obs["domain"] = pd.Categorical((xy[:, 0] > 0.5).astype(int) * 2 + (xy[:, 1] > 0.5).astype(int)).astype(str)
    adata.obs["domain"] = adata.obs["domain"].astype("category")
    halves = [np.flatnonzero(xy[:, 0] < 0.6), np.flatnonzero(xy[:, 0] > 0.4)]
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    gx.tl.stitch(adata, [(halves[0], 2 * xy[halves[0]]), (halves[1], 5 * xy[halves[1]] @ rot)])

    sq.gr.spatial_neighbors_knn(adata, spatial_key="X_gears_spatial", n_neighs=8)
    sq.gr.nhood_enrichment(adata, cluster_key="domain", n_perms=100, seed=0, show_progress_bar=False)
    z = np.asarray(adata.uns["domain_nhood_enrichment"]["zscore"])
    # the reconstruction keeps domains contiguous: same-domain neighbours are enriched, others depleted
    assert (np.diag(z) > 5).all()
    assert (z[~np.eye(4, dtype=bool)] < 2).all()

    # squidpy can also read the stitched graph gearsx wrote (obsp['gears_connectivities'])
    sq.gr.nhood_enrichment(
        adata, cluster_key="domain", connectivity_key="gears", n_perms=100, seed=0, show_progress_bar=False
    )
    z2 = np.asarray(adata.uns["domain_nhood_enrichment"]["zscore"])
    assert (np.diag(z2) > 5).all()
