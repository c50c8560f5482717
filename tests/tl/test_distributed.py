"""Patch prediction on a dask.distributed cluster gives what the in-process path gives."""

from contextlib import contextmanager

import numpy as np
import pytest

import gearsx as gx

distributed = pytest.importorskip("distributed", reason="dask.distributed is the `dask` extra (installed by make test)")


@pytest.fixture(scope="module")
def local_cluster():
    """Two worker processes with one thread each, as on a laptop or a small allocation."""
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@contextmanager
def threads_of(client):
    """Run torch here with the threads each worker runs it with (torch's float sums depend on the count)."""
    import torch

    counts = set(client.run(torch.get_num_threads).values())
    assert len(counts) == 1
    before = torch.get_num_threads()
    torch.set_num_threads(counts.pop())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_reconstruct_on_local_cluster_matches_in_process(trained_encoder, trained_gears, local_cluster):
    sc = trained_encoder[1][:1200].copy()
    _, geo = trained_gears
    kw = {"n_patch": 96, "min_overlap": 16, "batch_size": 2, "random_state": 3, "progress": False, "copy": True}
    with threads_of(local_cluster):
        here = gx.tl.reconstruct(sc, geo, **kw)
    there = gx.tl.reconstruct(sc, geo, client=local_cluster, **kw)
    n_patches = here.uns["gears"]["reconstruct"]["n_patches"]
    assert n_patches > 3 * 8  # chunks of 4 * batch_size = 8 patches: more tasks than workers ran
    np.testing.assert_array_equal(there.obsm["X_gears_spatial"], here.obsm["X_gears_spatial"])
    np.testing.assert_array_equal(there.obs["gears_uncertainty"], here.obs["gears_uncertainty"])
    assert here.uns["gears"]["reconstruct"]["params"]["executor"] == "in-process"
    assert there.uns["gears"]["reconstruct"]["params"]["executor"].startswith("dask tcp://")
    # the patches themselves, in order, chunk by chunk
    emb = sc.obsm["X_gears"]
    patches = [np.arange(i, i + 50) for i in range(0, 1100, 7)]
    with threads_of(local_cluster):
        a = geo.predict_patches(emb, patches, batch_size=4, random_state=1, progress=False)
    b = geo.predict_patches(emb, patches, batch_size=4, random_state=1, progress=False, client=local_cluster)
    assert len(a) == len(b) == len(patches)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    # a chunk's noise depends on its position only: predicting the chunks alone gives the same
    with threads_of(local_cluster):
        c = geo.predict_patches(emb, patches[16:32], batch_size=4, random_state=17, progress=False)
    for x, y in zip(a[16:32], c, strict=True):
        np.testing.assert_array_equal(x, y)


def test_settings_client_is_used_and_validated(trained_encoder, trained_gears, local_cluster):
    sc = trained_encoder[1][:600].copy()
    _, geo = trained_gears
    with pytest.raises(TypeError, match="`dask_client` must be a dask.distributed Client"):
        gx.settings.dask_client = "tcp://localhost:8786"
    assert gx.settings.dask_client is None
    with pytest.raises(TypeError, match="`client` must be a dask.distributed Client"):
        gx.tl.reconstruct(sc, geo, n_patch=128, client="tcp://localhost:8786")
    assert "X_gears_spatial" not in sc.obsm  # nothing written on bad input
    gx.settings.dask_client = local_cluster
    try:
        gx.tl.reconstruct(sc, geo, n_patch=128, progress=False)
    finally:
        gx.settings.dask_client = None
    assert sc.uns["gears"]["reconstruct"]["params"]["executor"].startswith("dask tcp://")


def test_community_stitch_on_local_cluster_matches_in_process(local_cluster):
    """Each community of patches is stitched as a task: the same layout as the in-process loop."""
    import anndata as ad
    from sklearn.neighbors import kneighbors_graph

    rng = np.random.default_rng(0)
    xy = rng.uniform(size=(1500, 2)) * [3.0, 1.0]
    patches = gx.geometry.random_walk_patches(kneighbors_graph(xy, 10), 120, coverage=2, random_state=0)
    pairs = [(p, 4.0 * xy[p] + rng.normal(0, 0.01, (len(p), 2))) for p in patches]
    adata = ad.AnnData(np.zeros((1500, 1), dtype=np.float32))
    here = gx.tl.stitch(adata, pairs, n_communities=3, copy=True)
    there = gx.tl.stitch(adata, pairs, n_communities=3, client=local_cluster, copy=True)
    np.testing.assert_array_equal(there.obsm["X_gears_spatial"], here.obsm["X_gears_spatial"])
    assert (there.obsp["gears_distances"] != here.obsp["gears_distances"]).nnz == 0
    assert here.uns["gears"]["params"]["executor"] == "in-process"
    assert there.uns["gears"]["params"]["executor"].startswith("dask tcp://")
    assert there.uns["gears"]["diagnostics"]["n_communities"] == 3
    assert gx.metrics.distance_correlation(there.obsm["X_gears_spatial"], xy) > 0.99
