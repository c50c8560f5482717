import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from sklearn.neighbors import kneighbors_graph

import gearsx as gx
from tests.conftest import shared_file


def _lognorm(a):
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    return a


def _stack(adatas):
    adatas = gx.pp.shared_genes(*adatas)
    return ad.concat(adatas, label="slide", keys=[f"s{i}" for i in range(len(adatas))], index_unique="-")


def _top_moran(a, layer, genes=None, n=20):
    """Moran's I of the top spatially variable genes of the first slide (a within-slide statistic)."""
    s0 = a[a.obs["slide"] == a.obs["slide"].cat.categories[0]].copy()
    s0.obsp["connectivities"] = kneighbors_graph(s0.obsm["spatial"], 6, include_self=False)
    values = s0.layers[layer] if layer else s0.X
    moran = pd.Series(
        sc.metrics.morans_i(
            s0.obsp["connectivities"], np.asarray(values.T.todense() if sp.issparse(values) else values.T)
        ),
        index=s0.var_names,
    )
    if genes is None:
        genes = moran.dropna().sort_values(ascending=False).index[:n]
    return moran[genes], genes


def _check_batch_removed(a, n_slides):
    before = gx.metrics.slide_separability(a, slide_key="slide")
    gx.pp.mean_center_per_slide(a, slide_key="slide")
    after = gx.metrics.slide_separability(a, slide_key="slide", layer="gears_centered")
    m_before, genes = _top_moran(a, None)
    m_after, _ = _top_moran(a, "gears_centered", genes)
    print(
        f"slide balanced accuracy {before['balanced_accuracy']:.3f} -> {after['balanced_accuracy']:.3f} (chance {after['chance']:.3f}); max |dMoran| {np.abs(m_after - m_before).max():.2e}"
    )
    assert after["chance"] == pytest.approx(1 / n_slides)
    assert before["balanced_accuracy"] > after["chance"] + 0.1  # a real batch effect to remove
    assert after["balanced_accuracy"] < after["chance"] + 0.1
    assert np.abs(m_after - m_before).max() < 0.01
    assert m_before.min() > 0.2  # these really are spatially variable genes


def test_simulator_batch_removed(small_tissue):
    st, _ = small_tissue
    _check_batch_removed(_lognorm(st.copy()), 3)


def test_dlpfc_batch_removed():
    slides = [ad.read_h5ad(shared_file("dlpfc_visium_libd", f"dlpfc_{i}.h5ad")) for i in (151673, 151675, 151676)]
    a = _lognorm(_stack(slides))
    gx.pp.highly_variable_genes(a, batch_key="slide", n_top_genes=2000, subset=True)
    _check_batch_removed(a, 3)


def test_breast_cancer_batch_removed():
    slides = [ad.read_h5ad(shared_file("paste_breast_cancer_st", f"breast_cancer_layer{i}.h5ad")) for i in (1, 2, 3, 4)]
    _check_batch_removed(_lognorm(_stack(slides)), 4)


def test_identity_and_sparse_equals_dense(rng):
    x = np.log1p(rng.poisson(2.0, (90, 12))).astype(np.float32)  # log-normalised-like, sparse at zero
    dense = ad.AnnData(
        x, obs=pd.DataFrame({"slide": np.repeat(["a", "b", "c"], 30)}, index=[str(i) for i in range(90)])
    )
    sparse = dense.copy()
    sparse.X = sp.csr_matrix(x)
    gx.pp.mean_center_per_slide(dense, slide_key="slide")
    gx.pp.mean_center_per_slide(sparse, slide_key="slide")
    np.testing.assert_allclose(dense.layers["gears_centered"], sparse.layers["gears_centered"], rtol=1e-6)
    out = dense.layers["gears_centered"]
    assert out.dtype == np.float32
    # every slide now has the global mean, and within-slide differences are unchanged
    for s in "abc":
        m = (dense.obs["slide"] == s).to_numpy()
        np.testing.assert_allclose(out[m].mean(0), x.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out[m] - out[m][0], x[m] - x[m][0], atol=1e-5)
    assert list(dense.uns["gears_centered"]["slides"]) == ["a", "b", "c"]


def test_single_slide_is_identity_and_logged(rng, caplog):
    a = ad.AnnData(
        rng.normal(size=(20, 5)).astype(np.float32),
        obs=pd.DataFrame({"slide": ["x"] * 20}, index=[str(i) for i in range(20)]),
    )
    with caplog.at_level("INFO", logger="gearsx"):
        gx.pp.mean_center_per_slide(a, slide_key="slide")
    np.testing.assert_allclose(a.layers["gears_centered"], a.X, atol=1e-6)
    assert "single slide" in caplog.text


def test_copy_layer_and_key_added(rng):
    a = ad.AnnData(
        rng.normal(size=(20, 5)).astype(np.float32),
        obs=pd.DataFrame({"s": list("ab") * 10}, index=[str(i) for i in range(20)]),
    )
    a.layers["log"] = a.X * 2
    out = gx.pp.mean_center_per_slide(a, slide_key="s", layer="log", key_added="c2", copy=True)
    assert "c2" in out.layers
    assert "c2" not in a.layers
    assert out.uns["c2"]["params"]["layer"] == "log"


def test_small_slides_are_named(rng, caplog):
    """A slide of few observations loses 1/n of each one's profile to its mean: the log names it."""
    a = ad.AnnData(
        rng.normal(size=(40, 5)).astype(np.float32),
        obs=pd.DataFrame({"s": ["big"] * 36 + ["tiny"] * 4}, index=[str(i) for i in range(40)]),
    )
    with caplog.at_level("WARNING", logger="gearsx"):
        gx.pp.mean_center_per_slide(a, slide_key="s")
    assert "1 of 2 slides" in caplog.text
    assert "('tiny', 4)" in caplog.text
    # what the warning is about: the small slide's profiles shrink towards the overall mean by its own mean
    tiny = a.obs["s"].to_numpy() == "tiny"
    x, c = a.X[tiny], a.layers["gears_centered"][tiny]
    np.testing.assert_allclose(c - x, np.broadcast_to(a.X.mean(0) - x.mean(0), x.shape), atol=1e-5)
    caplog.clear()
    one = a[:1].copy()  # one slide of one observation: centring is the identity, nothing to refuse
    gx.pp.mean_center_per_slide(one, slide_key=None)
    np.testing.assert_allclose(one.layers["gears_centered"], one.X)
    b = a.copy()
    b.obs["s"] = ["big"] * 30 + ["mid"] * 10
    with caplog.at_level("WARNING", logger="gearsx"):
        gx.pp.mean_center_per_slide(b, slide_key="s")
    assert "fewer than" not in caplog.text


def test_bad_input(rng):
    a = ad.AnnData(
        rng.normal(size=(20, 5)).astype(np.float32),
        obs=pd.DataFrame({"s": list("ab") * 10}, index=[str(i) for i in range(20)]),
    )
    with pytest.raises(KeyError, match="slide_key"):
        gx.pp.mean_center_per_slide(a, slide_key="sample")
    with pytest.raises(KeyError, match="layer"):
        gx.pp.mean_center_per_slide(a, slide_key="s", layer="missing")
    a.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gx.pp.mean_center_per_slide(a, slide_key="s")


def test_centring_without_a_slide_key_takes_the_column_prepare_recorded(small_tissue, caplog):
    # It centred a multi-slide reference as one slide (the identity): every slide kept its batch
    # offsets, without a word, after gx.pp.prepare had been told the slide column.
    import logging

    st, cells = gx.pp.prepare(*small_tissue, slide_key="slide", n_top_genes=60)
    explicit = gx.pp.mean_center_per_slide(st, slide_key="slide", copy=True)
    with caplog.at_level(logging.INFO, logger="gearsx"):
        implicit = gx.pp.mean_center_per_slide(st, slide_key=None, copy=True)
    assert "recorded in uns['gears_prepare']" in caplog.text
    np.testing.assert_array_equal(implicit.layers["gears_centered"], explicit.layers["gears_centered"])
    assert not np.allclose(implicit.layers["gears_centered"], st.X.toarray() if sp.issparse(st.X) else st.X)
    assert implicit.uns["gears_centered"]["params"]["slide_key"] == "slide"
    # the single cells carry the same record but no slide column: one data set, centring is the identity
    gx.pp.mean_center_per_slide(cells, slide_key=None)
    assert cells.uns["gears_centered"]["params"]["slide_key"] == ""
    x = cells.X.toarray() if sp.issparse(cells.X) else cells.X
    np.testing.assert_allclose(cells.layers["gears_centered"], x, rtol=1e-6)
