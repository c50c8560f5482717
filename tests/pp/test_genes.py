import logging

import anndata as ad
import numpy as np
import pytest

import gearsx as gx


def test_shared_genes_restricts_and_keeps_inputs(small_tissue):
    st, cells = small_tissue
    sub = cells[:, ::-1][:, :50].copy()  # other order, subset
    a, b = gx.pp.shared_genes(st, sub)
    assert a.n_vars == b.n_vars == 50
    assert list(a.var_names) == list(b.var_names)
    assert list(a.var_names) == [g for g in st.var_names if g in set(sub.var_names)]
    assert st.n_vars == 120  # input untouched


def test_no_shared_genes_error_lists_counts():
    a = ad.AnnData(np.ones((3, 4), dtype=np.float32))
    b = ad.AnnData(np.ones((3, 5), dtype=np.float32))
    b.var_names = [f"g{i}" for i in range(5)]
    with pytest.raises(ValueError, match=r"Only 0 genes are shared \(data set 0: 4 genes, data set 1: 5 genes\)"):
        gx.pp.shared_genes(a, b)


def test_genes_missed_only_for_case_or_version_are_named(small_tissue, caplog):
    st, cells = small_tissue
    names = np.array(cells.var_names, dtype=object)
    other = cells.copy()
    other.var_names = [n.upper() if i % 4 == 0 else n for i, n in enumerate(names)]  # a quarter in another case
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        a, _ = gx.pp.shared_genes(st, other)
    assert a.n_vars == 90  # the exact match still decides what is shared
    assert "30 genes of the first data set" in caplog.text
    assert "90 genes are shared exactly" in caplog.text
    caplog.clear()
    ens = [f"ENSMUSG{i:011d}" for i in range(st.n_vars)]
    left, right = st.copy(), cells.copy()
    left.var_names = ens
    right.var_names = [f"{g}.{i % 7 + 1}" if i < 60 else g for i, g in enumerate(ens)]  # versioned half
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.pp.shared_genes(left, right)
    assert "60 genes of the first data set" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.pp.shared_genes(st, cells[:, :100].copy())  # genes absent, not misnamed: nothing to say
    assert "shared_genes" not in caplog.text


def test_few_shared_genes_draw_a_warning(small_tissue, caplog):
    """12 of 120 genes shared (the rest under other identifiers): a warning naming the counts; 100 of 120: none."""
    st, cells = small_tissue
    other = cells.copy()
    other.var_names = [n if i < 12 else f"ENSMUSG{i:011d}" for i, n in enumerate(cells.var_names)]
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        a, _ = gx.pp.shared_genes(st, other)
    assert a.n_vars == 12
    assert "only 12 of the 120 genes of data set 0 (the smallest)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.pp.shared_genes(st, cells[:, :100].copy())  # a panel nearly all found
    assert "only" not in caplog.text


def test_prepare_without_a_slide_key_names_a_slide_column(small_tissue, caplog):
    # Every later step takes prepare's record: slide_key=None on several slides pooled them all the
    # way through (centring, encoder, geometry model) without a word.
    st, cells = small_tissue
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.pp.prepare(st, cells, slide_key=None, n_top_genes=60)
    assert "`slide_key` is None" in caplog.text
    assert "`adata.obs['slide']` holds 3 values" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.pp.prepare(st[st.obs["slide"] == st.obs["slide"].iloc[0]].copy(), cells, slide_key=None, n_top_genes=60)
    assert "is None" not in caplog.text


def test_prepare(small_tissue):
    st, cells = small_tissue
    st_p, sc_p = gx.pp.prepare(st, cells, slide_key="slide", n_top_genes=60)
    assert st_p.n_vars == sc_p.n_vars == 60
    assert list(st_p.var_names) == list(sc_p.var_names)
    assert st_p.var["highly_variable"].all()
    np.testing.assert_allclose(
        np.expm1(st_p.X[:5].toarray()).sum(1), np.expm1(st_p.X[:5].toarray()).sum(1).mean(), rtol=0.5
    )
    assert "counts" in st_p.layers
    assert st_p.uns["gears_prepare"]["params"]["normalisation_st"] == "normalize_total + log1p"
    assert "log1p" not in st.uns  # inputs untouched
    # spatially variable gene kinds dominate the selection over housekeeping genes
    kinds = st_p.var["gene_kind"].astype(str).value_counts()
    assert kinds.get("housekeeping", 0) < kinds[["type_marker", "domain_marker", "gradient"]].sum()


def test_prepare_detects_logged_input(small_tissue, caplog):
    st, cells = small_tissue
    st_p, sc_p = gx.pp.prepare(st, cells, slide_key="slide", n_top_genes=60, subset=False)
    with caplog.at_level("WARNING"):
        again, _ = gx.pp.prepare(st_p, sc_p, slide_key="slide", n_top_genes=60)
    assert "looks log-transformed" in caplog.text
    assert again.uns["gears_prepare"]["params"]["normalisation_st"] == "input already log-normalised"


def test_prepare_counts_and_names_observations_without_counts(small_tissue, caplog):
    import scipy.sparse as sp

    st, cells = small_tissue
    st_p, sc_p = gx.pp.prepare(st, cells, slide_key="slide", n_top_genes=60)
    assert sc_p.uns["gears_prepare"]["params"]["n_empty_sc"] == 0
    empty = cells.copy()
    x = empty.X.toarray() if sp.issparse(empty.X) else np.array(empty.X)
    x[[3, 7, 11]] = 0  # three cells without a count in any gene
    empty.X = sp.csr_matrix(x)
    keep = set(sc_p.var_names)  # cells whose counts lie only in genes the selection drops are empty too
    x2 = x.copy()
    x2[20][[g in keep for g in empty.var_names]] = 0
    empty.X = sp.csr_matrix(x2)
    with caplog.at_level("WARNING"):
        st_e, sc_e = gx.pp.prepare(st, empty, slide_key="slide", n_top_genes=60)
    assert list(sc_e.var_names) == list(sc_p.var_names)  # four cells do not move the gene selection
    assert x2[20].sum() > 0  # cell 20 has counts, only not in the genes kept
    assert sc_e.uns["gears_prepare"]["params"]["n_empty_sc"] == 4
    assert "4 of the 3000 observations of adata_sc" in caplog.text
    assert st_e.uns["gears_prepare"]["params"]["n_empty_st"] == 0
    assert "no counts in the 60 genes kept" in caplog.text
    assert sc_e.n_obs == cells.n_obs  # kept, not dropped


def test_prepare_bad_input(small_tissue):
    st, cells = small_tissue
    with pytest.raises(KeyError, match="slide_key"):
        gx.pp.prepare(st, cells, slide_key="sample")
    bad = cells.copy()
    bad.X = bad.X.toarray()
    bad.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gx.pp.prepare(st, bad, slide_key="slide")


def test_prepare_refuses_a_slide_or_data_set_without_counts(small_tissue):
    st, cells = small_tissue
    empty = cells.copy()
    empty.X = empty.X * 0  # e.g. a wrong layer (scanpy failed with "Cannot cut empty array")
    with pytest.raises(ValueError, match="`adata_sc` has no counts in the 120 shared genes"):
        gx.pp.prepare(st, empty, slide_key="slide")
    second = st.obs["slide"].cat.categories[1]
    one_slide_empty = st.copy()
    one_slide_empty.X = one_slide_empty.X.multiply((st.obs["slide"] != second).to_numpy()[:, None]).tocsr()
    with pytest.raises(ValueError, match=f"slide '{second}' of `adata_st` has no counts"):
        gx.pp.prepare(one_slide_empty, cells, slide_key="slide")


def test_prepare_keeps_a_slide_called_sc_apart_from_the_cells(small_tissue):
    """The gene choice is per batch (each slide, and the SC cells as 'sc'): a slide's name must not merge it
    with the cells, so renaming a slide changes nothing."""
    st, cells = small_tissue
    first = st.obs["slide"].cat.categories[0]
    renamed = st.copy()
    renamed.obs["slide"] = renamed.obs["slide"].cat.rename_categories({first: "sc"})
    picked = [gx.pp.prepare(a, cells, slide_key="slide", n_top_genes=60)[0].var_names.tolist() for a in (st, renamed)]
    assert picked[0] == picked[1]


def test_highly_variable_genes_wrapper(small_tissue):
    st, _ = small_tissue
    a = st.copy()
    gx.pp.prepare  # noqa: B018 - imported namespace
    import scanpy as sc

    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    gx.pp.highly_variable_genes(a, batch_key="slide", n_top_genes=500)  # capped at n_vars
    assert a.var["highly_variable"].sum() == a.n_vars
    with pytest.raises(KeyError, match="batch_key"):
        gx.pp.highly_variable_genes(a, batch_key="nope")
    # counts under a flavour that ranks the dispersion of log values: an error naming the fix
    with pytest.raises(ValueError, match="seurat_v3"):
        gx.pp.highly_variable_genes(st.copy(), batch_key="slide", n_top_genes=50)
    counts = st.copy()
    gx.pp.highly_variable_genes(counts, batch_key="slide", n_top_genes=50, flavor="seurat_v3")
    assert counts.var["highly_variable"].sum() == 50
    # scaled data: scanpy ranked the exponentials of z-scores without a word
    scaled = a.copy()
    sc.pp.scale(scaled)
    with pytest.raises(ValueError, match="negative values"):
        gx.pp.highly_variable_genes(scaled, n_top_genes=50)
    with pytest.raises(ValueError, match="seurat_v3_paper"):  # scanpy's message named two of the four
        gx.pp.highly_variable_genes(a, flavor="seurat_v4")


def test_prepare_normalises_counts_under_a_stale_log1p_record(small_tissue, caplog):
    # prepare(..., layer='counts') on prepared data: the counts come with the uns['log1p'] of the logged X
    st, cells = small_tissue
    st_p, sc_p = gx.pp.prepare(st, cells, slide_key="slide", n_top_genes=60, subset=False)
    assert "log1p" in st_p.uns
    with caplog.at_level("WARNING"):
        again_st, again_sc = gx.pp.prepare(st_p, sc_p, slide_key="slide", n_top_genes=60, layer="counts")
    assert "looks log-transformed" not in caplog.text
    assert "carries uns['log1p'] but its values are integer counts" in caplog.text
    assert again_st.uns["gears_prepare"]["params"]["normalisation_st"] == "normalize_total + log1p"
    assert again_sc.uns["gears_prepare"]["params"]["normalisation_sc"] == "normalize_total + log1p"
    # the same log-normalised expression as the first pass on the same genes
    first, _ = gx.pp.prepare(st, cells, slide_key="slide", n_top_genes=60)
    np.testing.assert_allclose(again_st[:, first.var_names].X.toarray(), first.X.toarray(), rtol=1e-5, atol=1e-6)
    assert "log1p" in st_p.uns  # the input keeps its record


@pytest.mark.parametrize("empty_share", [0.1, 0.6])
def test_prepare_normalises_dense_and_sparse_counts_alike_with_empty_cells(small_tissue, empty_share):
    """Each cell is scaled to the median total of the cells holding a count, however X is stored.

    scanpy 1.11 alone took the empty cells into a sparse matrix's median (scverse/scanpy#4251): another
    scale than the dense matrix's at 10% empty cells, and a target of 0 (every value 0) above half.
    """
    import scipy.sparse as sp

    st, cells = small_tissue
    x = cells.X.toarray() if sp.issparse(cells.X) else np.array(cells.X)
    x[: int(empty_share * len(x))] = 0
    out = {}
    for name, m in (("csr", sp.csr_matrix(x)), ("dense", x)):
        query = cells.copy()
        query.X = m
        _, out[name] = gx.pp.prepare(st, query, slide_key="slide", n_top_genes=60, subset=False)
    dense = out["dense"].X.toarray() if sp.issparse(out["dense"].X) else out["dense"].X
    np.testing.assert_array_equal(out["csr"].X.toarray(), dense)
    totals = x.sum(1)
    kept = totals > 0
    np.testing.assert_allclose(np.expm1(dense[kept]).sum(1), np.median(totals[kept]), rtol=1e-4)


def test_prepare_reads_sparse_arrays_and_half_precision_like_float32(small_tissue):
    import scipy.sparse as sp

    st, cells = small_tissue
    ref_st, ref_sc = gx.pp.prepare(st, cells, slide_key="slide", n_top_genes=60)
    for convert in (sp.csr_array, sp.csc_array, lambda m: m.toarray().astype(np.float16)):
        a, b = st.copy(), cells.copy()
        a.X, b.X = convert(sp.csr_matrix(a.X)), convert(sp.csr_matrix(b.X))
        given = (type(b.X), b.X.dtype)
        got_st, got_sc = gx.pp.prepare(a, b, slide_key="slide", n_top_genes=60)
        assert (type(b.X), b.X.dtype) == given  # the input untouched: prepare converts its own copy
        assert list(got_st.var_names) == list(ref_st.var_names)  # the same genes chosen, no overflow
        got = got_sc.X.toarray() if sp.issparse(got_sc.X) else got_sc.X
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref_sc.X.toarray(), rtol=1e-5, atol=1e-6)


def test_prepare_normalize_overrides_the_decision_from_the_values(small_tissue, caplog, tmp_path):
    """Integers on a normalised scale (a shared 0-100 scale) are not counts; ``normalize`` says so.

    ``None`` decides from the values (integers: counts, normalised and logged); ``False`` keeps the
    values as given, genes in the shared order; ``True`` normalises even log-normalised input.
    """
    st, cells = small_tissue
    scale_st, scale_sc = st.copy(), cells.copy()  # each gene scaled onto integers 0-100 by its largest value
    for a in (scale_st, scale_sc):
        x = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X, dtype=float)
        a.X = np.round(100 * x / np.maximum(x.max(0), 1)).astype(np.float32)
    auto_st, _ = gx.pp.prepare(scale_st, scale_sc, slide_key="slide", n_top_genes=60, subset=False)
    assert auto_st.uns["gears_prepare"]["params"]["normalisation_st"] == "normalize_total + log1p"
    assert auto_st.uns["gears_prepare"]["params"]["normalize"] == "auto"
    kept_st, kept_sc = gx.pp.prepare(
        scale_st, scale_sc, slide_key="slide", n_top_genes=60, subset=False, normalize=False
    )
    for kept, given in ((kept_st, scale_st), (kept_sc, scale_sc)):
        np.testing.assert_array_equal(np.asarray(kept.X), np.asarray(given[:, kept.var_names].X))
        params = kept.uns["gears_prepare"]["params"]
        assert params["normalize"] is False
        assert params["normalisation_st"] == params["normalisation_sc"] == "kept as given (normalize=False)"
        assert "counts" not in kept.layers
    assert not np.allclose(np.asarray(auto_st.X.toarray() if hasattr(auto_st.X, "toarray") else auto_st.X), kept_st.X)
    assert scale_st.X.max() == 100  # the inputs untouched
    gx.pp.mean_center_per_slide(kept_st, slide_key="slide")  # integers pass, as declared: not counts
    kept_sc.write_h5ad(tmp_path / "kept.h5ad")  # the declaration survives a file (a numpy bool there)
    gx.pp.mean_center_per_slide(ad.read_h5ad(tmp_path / "kept.h5ad"), slide_key=None)
    with pytest.raises(ValueError, match=r"normalize=False"):  # undeclared, they read as counts; the fix is named
        gx.pp.mean_center_per_slide(scale_st, slide_key="slide")
    logged_st, logged_sc = gx.pp.prepare(st, cells, slide_key="slide", n_top_genes=60, subset=False)
    with caplog.at_level("WARNING"):
        again, _ = gx.pp.prepare(logged_st, logged_sc, slide_key="slide", n_top_genes=60, subset=False, normalize=True)
    assert "integer counts" not in caplog.text  # no word of a stale record: the normalisation was asked for
    assert "logs it again" in caplog.text  # but the second log is named (it was an info line only)
    assert again.uns["gears_prepare"]["params"]["normalisation_st"] == "normalize_total + log1p (normalize=True)"
    x = again.layers["counts"]
    np.testing.assert_allclose(
        (x.toarray() if hasattr(x, "toarray") else x),
        logged_st.X.toarray() if hasattr(logged_st.X, "toarray") else logged_st.X,
    )
    with pytest.raises(TypeError, match="`normalize` must be True, False or None"):
        gx.pp.prepare(st, cells, slide_key="slide", normalize="no")


def test_prepare_warns_on_integers_without_zeros_and_names_normalize(small_tissue, caplog):
    """Integers with almost no zeros are unlike counts: normalised as counts by default, with a warning naming the fix."""
    st, cells = small_tissue
    shifted_st, shifted_sc = st.copy(), cells.copy()  # a scale starting at 1, as the 0-101 files nearly do
    for a in (shifted_st, shifted_sc):
        x = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X, dtype=float)
        a.X = (np.round(100 * x / np.maximum(x.max(0), 1)) + 1).astype(np.float32)
    with caplog.at_level("WARNING"):
        out, _ = gx.pp.prepare(shifted_st, shifted_sc, slide_key="slide", n_top_genes=60)
    assert "adata_st holds integers with almost no zeros" in caplog.text
    assert "adata_sc holds integers with almost no zeros" in caplog.text
    assert "pass normalize=False" in caplog.text
    assert out.uns["gears_prepare"]["params"]["normalisation_st"] == "normalize_total + log1p"  # still as counts
    for normalize in (True, False):  # a declared choice draws no warning
        caplog.clear()
        with caplog.at_level("WARNING"):
            gx.pp.prepare(shifted_st, shifted_sc, slide_key="slide", n_top_genes=60, normalize=normalize)
        assert "almost no zeros" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # counts, with their zeros: no warning
        gx.pp.prepare(st, cells, slide_key="slide", n_top_genes=60)
    assert "almost no zeros" not in caplog.text
    caplog.clear()
    floats_st, floats_sc = shifted_st.copy(), shifted_sc.copy()  # not logged, not integers: no claim of integers
    for a in (floats_st, floats_sc):
        a.X = a.X + np.float32(0.5)
    with caplog.at_level("WARNING"):
        gx.pp.prepare(floats_st, floats_sc, slide_key="slide", n_top_genes=60)
    assert "almost no zeros" not in caplog.text


def test_a_missing_layer_is_named_when_anndata_lists_x_among_the_layers():
    """anndata 0.13 lists ``X`` among the layers, as the key ``None``.

    The error for a missing layer sorted the layers' names to list them, and raised
    ``TypeError: '<' not supported between instances of 'str' and 'NoneType'`` there instead: on the
    newest releases every missing-layer error of gearsx was that TypeError.
    """
    from types import SimpleNamespace

    from gearsx._anndata import get_matrix

    x = np.zeros((3, 2))
    like_013 = SimpleNamespace(X=x, layers={None: x, "gears_centered": x, "counts": x})
    with pytest.raises(KeyError, match=r"available: \['counts', 'gears_centered'\]"):
        get_matrix(like_013, "missing")
    assert get_matrix(like_013, "counts") is x
