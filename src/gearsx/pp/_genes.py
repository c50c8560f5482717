from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from gearsx._anndata import (
    all_integers,
    check_finite_matrix,
    check_log_expression,
    check_slide_key,
    empty_rows,
    get_matrix,
    layer_names,
    looks_logged,
    stored_sample,
    warn_unkeyed_slides,
    write_record,
)
from gearsx._keys import Key
from gearsx._utils import check_positive_int, checks_flags

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["highly_variable_genes", "prepare", "shared_genes"]

logger = logging.getLogger(__name__)

#: Fewer shared genes than this is an error in :func:`shared_genes` (override with ``min_shared``).
MIN_SHARED_GENES = 10


def shared_genes(*adatas: AnnData, min_shared: int = MIN_SHARED_GENES) -> list[AnnData]:
    """Restrict every data set to the genes they all share.

    Parameters
    ----------
    *adatas
        Two or more data sets (e.g. ST slides and an SC data set).
    min_shared
        Minimum number of shared genes; fewer raises.

    Returns
    -------
    New :class:`~anndata.AnnData` objects (copies, inputs untouched), in the input
    order, all with the shared genes in the order of the first data set.

    Examples
    --------
    >>> import gearsx as gx
    >>> st, sc = gx.datasets.simulate_tissue(n_cells_per_slide=2000, random_state=0)
    >>> st2, sc2 = gx.pp.shared_genes(st, sc[:, :100])
    >>> st2.n_vars
    100
    """
    if len(adatas) < 2:
        msg = f"`shared_genes` needs at least two data sets; got {len(adatas)}."
        raise ValueError(msg)
    from anndata import AnnData

    min_shared = check_positive_int(min_shared, name="min_shared")  # at 0, no shared gene gave genes-less data
    for i, a in enumerate(adatas):
        if not isinstance(a, AnnData):
            msg = f"Data set {i} of `shared_genes` is a {type(a).__name__}, not an AnnData."
            raise TypeError(msg)
    for i, a in enumerate(adatas):
        if not a.var_names.is_unique:
            msg = f"Data set {i} has duplicated var_names; run `adata.var_names_make_unique()` first."
            raise ValueError(msg)
    common = adatas[0].var_names
    for a in adatas[1:]:
        common = common[common.isin(a.var_names)]
    if len(common) < min_shared:
        sizes = ", ".join(f"data set {i}: {a.n_vars} genes" for i, a in enumerate(adatas))
        msg = (
            f"Only {len(common)} genes are shared ({sizes}); at least {min_shared} are needed. "
            "Check that all data sets use the same gene identifiers (symbols vs Ensembl IDs, case)."
        )
        raise ValueError(msg)
    _warn_near_misses(adatas, common)
    _warn_few_shared(adatas, common)
    logger.info("%d genes shared by %d data sets", len(common), len(adatas))
    return [a[:, common].copy() for a in adatas]


_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*\d+)\.\d+$")


def _canonical(name: str) -> str:
    """Return a gene identifier upper-cased, without an Ensembl version (``ENSG00000128683.13`` -> ``ENSG00000128683``)."""
    return _ENSEMBL_VERSION.sub(r"\1", str(name).upper())


def _warn_near_misses(adatas, common) -> None:
    """Warn when many genes of the first data set are missed only for their case or Ensembl version.

    ``Gad1`` against ``GAD1``, or ``ENSG00000128683.13`` against ``ENSG00000128683``, are the same
    gene to a reader and different ones to an exact match: the genes would be dropped without a word.
    A warning (not an error: cross-species or deliberately distinct names are possible) names how many
    and what to do, when they are at least 3 and 5% of the genes that would otherwise be shared.
    """
    exact = set(common)
    canon = [{_canonical(n) for n in a.var_names} for a in adatas[1:]]
    missed = [n for n in adatas[0].var_names if n not in exact and all(_canonical(n) in c for c in canon)]
    if len(missed) >= max(3, 0.05 * (len(common) + len(missed))):
        logger.warning(
            "shared_genes: %d genes of the first data set (e.g. %s) match another data set's genes only when "
            "case or an Ensembl version suffix is ignored, and are dropped; %d genes are shared exactly. Use the "
            "same identifiers on every side first (e.g. `adata.var_names = adata.var_names.str.upper()`, or strip "
            "the version with `.str.replace(r'\\.\\d+$', '', regex=True)`).",
            len(missed),
            ", ".join(map(str, missed[:3])),
            len(common),
        )


#: Below this share of the smallest data set's genes, :func:`shared_genes` warns that most of them are missing.
FEW_SHARED = 0.5


def _warn_few_shared(adatas, common) -> None:
    """Warn when fewer than :data:`FEW_SHARED` of the smallest data set's genes are found in every data set.

    A targeted panel is nearly all found in a transcriptome (Xenium's 248 genes, MERFISH's 161); when
    most of the smaller gene list is missing, the identifiers rarely agree (symbols against Ensembl
    IDs, two species, another annotation), and the models would learn from the few genes that match
    by chance, without a word.
    """
    i = int(np.argmin([a.n_vars for a in adatas]))
    smallest = adatas[i].n_vars
    if len(common) < FEW_SHARED * smallest:
        logger.warning(
            "shared_genes: only %d of the %d genes of data set %d (the smallest) are found in every data set "
            "(%.0f%%); the rest is dropped. Check that all data sets use the same gene identifiers (symbols or "
            "Ensembl IDs, one species, one annotation) before going on.",
            len(common), smallest, i, 100 * len(common) / max(smallest, 1),
        )  # fmt: skip


#: The flavours of :func:`scanpy.pp.highly_variable_genes`.
HVG_FLAVORS = ("seurat", "cell_ranger", "seurat_v3", "seurat_v3_paper")


def highly_variable_genes(
    adata: AnnData,
    *,
    batch_key: str | None = None,
    n_top_genes: int = 2000,
    flavor: str = "seurat",
    layer: str | None = None,
    **kwargs,
) -> None:
    """Batch-aware highly variable genes: a thin wrapper of :func:`scanpy.pp.highly_variable_genes`.

    Genes are ranked within each batch (slide or data set) and combined as scanpy does
    with ``batch_key``. ``n_top_genes`` is capped at the number of genes.

    Parameters
    ----------
    adata
        Log-normalised data.
    batch_key
        ``obs`` column with the batch (slide, data set).
    n_top_genes
        Number of genes to select.
    flavor
        Scanpy's flavour (``'seurat'`` and ``'cell_ranger'`` expect log data, and integer counts are
        an error; ``'seurat_v3'`` expects the counts).
    layer
        Layer to use instead of ``X``.
    **kwargs
        Passed to :func:`scanpy.pp.highly_variable_genes`.

    Returns
    -------
    ``None``; writes ``var['highly_variable']`` and scanpy's companion columns.

    Examples
    --------
    >>> import scanpy as sc
    >>> import gearsx as gx
    >>> st, _ = gx.datasets.simulate_tissue(n_cells_per_slide=2000, random_state=0)
    >>> sc.pp.normalize_total(st)
    >>> sc.pp.log1p(st)
    >>> gx.pp.highly_variable_genes(st, batch_key="slide", n_top_genes=50)
    >>> int(st.var["highly_variable"].sum())
    50
    """
    import scanpy as sc

    if batch_key is not None:
        check_slide_key(adata, batch_key, "batch_key")
    n_top_genes = check_positive_int(n_top_genes, name="n_top_genes")
    if flavor not in HVG_FLAVORS:  # scanpy's own message names only two of them
        msg = f"`flavor` must be one of {HVG_FLAVORS}; got {flavor!r}."
        raise ValueError(msg)
    x = get_matrix(adata, layer)
    where = f"layers[{layer!r}]" if layer else "X"
    if isinstance(x, sp.sparray) or _half_precision(x):  # converting a copy here would not reach scanpy
        m = f"adata.{where}"
        what, fix = (
            ("a SciPy sparse array, which scanpy 1.11's gene choice cannot read", f"scipy.sparse.csr_matrix({m})")
            if isinstance(x, sp.sparray)
            else (f"{x.dtype}, on which scanpy's gene choice overflows", f"{m}.astype('float32')")
        )
        msg = f"`{where}` is {what}: convert it first, `{m} = {fix}`."
        raise TypeError(msg)
    lowest = float((x.data if sp.issparse(x) else np.asarray(x)).min(initial=0.0))
    if lowest < 0:  # scaled or centred values: scanpy would rank their exponentials without a word
        msg = (
            f"`{where}` holds negative values (min {lowest:.3g}), as scaled or centred data do; gene choice needs "
            "log-normalised expression (or counts with flavor='seurat_v3'): pass that layer with `layer`."
        )
        raise ValueError(msg)
    if flavor in ("seurat", "cell_ranger"):  # dispersions of log values: counts would rank genes by their mean
        check_log_expression(
            x,
            f"layers[{layer!r}]" if layer else "X",
            f"flavor={flavor!r} expects log-normalised expression: normalise and log-transform first, "
            "or pass flavor='seurat_v3' (which expects the counts)",
        )
    sc.pp.highly_variable_genes(
        adata,
        n_top_genes=min(n_top_genes, adata.n_vars),
        batch_key=batch_key,
        flavor=flavor,
        layer=layer,
        **kwargs,
    )


#: Larger expression values are not counts of one gene in one observation.
MAX_COUNT = 1e8


def _check_expression_range(x, name: str, layer: str | None) -> None:
    """Raise on negative values (scaled data) or values no count matrix holds, before scanpy sees them."""
    data = x.data if sp.issparse(x) else np.asarray(x)
    if data.size == 0:
        return
    lo, hi = float(data.min()), float(data.max())
    where = f"`{name}.layers[{layer!r}]`" if layer else f"`{name}.X`"
    if lo < 0:
        msg = (
            f"{where} holds negative values (min {lo:.3g}); prepare expects raw counts or log-normalised "
            "expression. Scaled or centred data cannot be normalised: pass the counts (e.g. `layer='counts'`)."
        )
        raise ValueError(msg)
    if hi > MAX_COUNT:
        msg = (
            f"{where} holds values up to {hi:.3g}, beyond any count of one gene in one observation "
            f"(limit {MAX_COUNT:.0e}); check the input (wrong units, or a corrupted matrix)."
        )
        raise ValueError(msg)


def _normalize_log(adata: AnnData, name: str, *, normalize: bool | None = None) -> str:
    import scanpy as sc

    if normalize is False:
        return "kept as given (normalize=False)"
    logged = looks_logged(adata)
    if normalize and logged:  # asked for, but log-normalising log values logs them twice
        logger.warning(
            "%s looks log-transformed already (non-integer values, with uns['log1p'] present or all below 20), yet "
            "normalize=True normalises and logs it again, as counts. If these are log values, pass the counts "
            "(layer='counts') or normalize=None; if they really are counts, this warning can be ignored.",
            name,
        )
    if normalize is None and logged:
        logger.warning(
            "%s looks log-transformed already (non-integer values, with uns['log1p'] present or all below 20); "
            "skipping normalize_total + log1p.",
            name,
        )
        return "input already log-normalised"
    if "log1p" in adata.uns:
        if normalize:  # normalised on request, whatever the record says
            logger.info("%s: normalize=True, so uns['log1p'] is dropped and the values are normalised and logged", name)
        else:  # a stale record: the values are counts (see looks_logged)
            logger.warning(
                "%s carries uns['log1p'] but its values are integer counts (the record outlived the matrix it "
                "described, e.g. counts put back into X); normalising and log-transforming them.",
                name,
            )
        del adata.uns["log1p"]
    if normalize is None:
        _warn_counts_without_zeros(adata.X, name)
    adata.layers[Key.counts_layer] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=_median_total(adata.X))
    sc.pp.log1p(adata)
    return "normalize_total + log1p" + (" (normalize=True)" if normalize else "")


#: Integer data with fewer zeros than this share are unlike counts of cells or spots (see :func:`prepare`).
MIN_ZERO_SHARE = 0.01


def _warn_counts_without_zeros(x, name: str) -> None:
    """Warn when integer values about to be normalised as counts hold almost no zeros.

    Counts of single cells, and of spots on the panels and gene sets we have seen, hold many zeros:
    our real count data 30-83% (osmFISH, Xenium, the breast-cancer ST slides), the simulator's
    spots 8%. Values on a normalised integer scale hold almost none: the seqFISH and Tasic files
    0-0.2%.
    """
    sample = stored_sample(x)
    if not all_integers(sample):  # unlogged floats (scaled, not logged) are not the integers this is about
        return
    if sp.issparse(x):  # the stored sample holds no implicit zeros: count them from the structure
        size = x.shape[0] * x.shape[1]
        zeros = 1.0 - x.nnz / size if size else 1.0
    else:
        size = sample.size
        zeros = float(np.mean(sample == 0)) if size else 1.0
    if size >= 1000 and zeros < MIN_ZERO_SHARE:
        logger.warning(
            "%s holds integers with almost no zeros (%.2g%% of its values), unlike counts of cells or spots; "
            "they are normalised and log-transformed as counts. If they are on a normalised scale (ranks, a "
            "quantile-normalised or batch-scaled panel), pass normalize=False to use them as given, or "
            "normalize=True to treat them as counts; either choice silences this warning. Which places cells "
            "better depends on the data (the 'Preprocessing' section of the docs' 'How GEARS works').",
            name, 100 * zeros,
        )  # fmt: skip


def _median_total(x) -> float:
    """Return the median total count of the observations that hold any count (``1`` when none does).

    The target of the library-size normalisation, given to :func:`scanpy.pp.normalize_total`
    explicitly: left to itself (``target_sum=None``), scanpy 1.11 takes the median over the
    *non-empty* rows of a dense matrix but over *all* rows of a sparse one (scverse/scanpy#4251),
    so the same counts came out scaled differently by storage, and a sparse matrix with more
    than half of its rows empty was divided by a target of ``0``: every value became ``0``.
    """
    totals = np.asarray(x.sum(1, dtype=np.float64)).ravel()
    totals = totals[totals > 0]
    return float(np.median(totals)) if len(totals) else 1.0


def _scanpy_ready(x):
    """Return ``x`` in a form scanpy 1.11's normalisation and gene choice read correctly.

    - A SciPy sparse *array* (``csr_array``, ``csc_array``; valid in AnnData) becomes the sparse
      *matrix* of the same format: ``normalize_total`` failed on it with "Data matrix has wrong
      shape (n, 1)" and ``highly_variable_genes`` with a bare ``NotImplementedError``.
    - Half-precision floats become ``float32``: the genes' variances overflowed in ``float16``
      (scanpy warned, then chose other genes), and SciPy's sparse matrices refuse that type later on.

    Anything else is returned as it is (no copy).
    """
    if isinstance(x, sp.sparray):
        x = sp.csc_matrix(x) if x.format == "csc" else sp.csr_matrix(x)
    return x.astype(np.float32) if _half_precision(x) else x


def _half_precision(x) -> bool:
    return np.issubdtype(x.dtype, np.floating) and x.dtype.itemsize < 4


@checks_flags
def prepare(
    adata_st: AnnData,
    adata_sc: AnnData,
    *,
    slide_key: str | None,
    n_top_genes: int = 2000,
    layer: str | None = None,
    subset: bool = True,
    min_shared: int = MIN_SHARED_GENES,
    normalize: bool | None = None,
) -> tuple[AnnData, AnnData]:
    """Prepare ST slides and an SC data set for gearsx (see :ref:`gears-preprocessing`).

    1. Restrict both to their shared genes (:func:`shared_genes`).
    2. Library-size normalisation + ``log1p`` with scanpy, unless the data already look
       log-transformed: non-integer values, with ``uns['log1p']`` present or all below 20
       (then a warning says so and nothing is logged twice). Integer values are counts, even
       under a stale ``uns['log1p']`` (counts put back into ``X`` after scanpy's ``log1p``, or
       ``layer='counts'`` of processed data), and are normalised. Each observation is scaled to
       the median total of the observations that hold a count, whether ``X`` is dense or sparse
       (scanpy 1.11 left to itself takes the empty ones into a sparse matrix's median,
       scverse/scanpy#4251). Raw values are kept in ``layers['counts']``. SciPy sparse arrays
       become sparse matrices and half-precision values ``float32`` first: scanpy 1.11 cannot
       normalise the first and its gene choice overflows on the second. Integer values with almost
       no zeros (under 1% of them) are unlike counts, and draw a warning that names ``normalize``,
       which overrides this decision for both inputs.
    3. Highly variable genes on the concatenation with the slide (ST) or ``'sc'`` as
       batch key (:func:`highly_variable_genes`), optionally keeping only them.

    Parameters
    ----------
    adata_st
        Spatial slides, with the slide of each observation in ``obs[slide_key]``.
    adata_sc
        Dissociated single cells.
    slide_key
        ``obs`` column of ``adata_st`` with the slide; ``None`` for a single slide (a warning
        names a column such as ``obs['slide']`` that holds several values: every later step takes
        this choice from the record).
    n_top_genes
        Number of highly variable genes.
    layer
        Use this layer of both inputs instead of ``X`` (it becomes ``X`` of the outputs).
    subset
        Keep only the highly variable genes.
    min_shared
        Minimum number of shared genes.
    normalize
        Library-size normalisation and ``log1p`` of both inputs. ``None`` (default): decided from the
        values, as step 2 says (integer values are taken for counts). ``True``: always, as counts
        (log-normalised input would be logged twice). ``False``:
        never; the values are used as given (the genes are chosen on their ``log1p`` unless they
        look log-normalised already, since scanpy's gene choice reads log values). ``False`` is for
        values on a normalised scale that are not counts, even integers: ranks, quantile-normalised
        or batch-scaled panels, such as the seqFISH and Tasic files of our benchmarks (integers
        0-101). Which choice places cells better depends on the query (see
        :ref:`gears-preprocessing`); the choice is recorded in ``uns['gears_prepare']``, and
        :func:`gearsx.pp.mean_center_per_slide` and :func:`gearsx.tl.domain_embedding` then accept
        such integers in ``X``.

    Returns
    -------
    ``(st, sc)``: new AnnData objects (inputs untouched) with log-normalised ``X`` (as given with
    ``normalize=False``), ``layers['counts']`` (where normalised), ``var['highly_variable']`` and the parameters in
    ``uns['gears_prepare']`` (with ``n_empty_st`` / ``n_empty_sc``, the observations without a count
    in the genes kept; a warning names them when there are any).

    Examples
    --------
    >>> import gearsx as gx
    >>> st, sc = gx.datasets.simulate_tissue(n_cells_per_slide=2000, random_state=0)
    >>> st, sc = gx.pp.prepare(st, sc, slide_key="slide", n_top_genes=100)
    >>> st.n_vars, sc.n_vars
    (100, 100)
    """
    import anndata as ad

    if adata_st is adata_sc:  # a typo for (st, sc): every later step would run, and place the spots themselves
        msg = (
            "`adata_st` and `adata_sc` are the same object; pass the spatial reference and the single cells. "
            "To place the spots themselves (a self-mapping check), pass `adata_st.copy()` as `adata_sc`."
        )
        raise ValueError(msg)
    check_slide_key(adata_st, slide_key)
    if slide_key is None:  # the first step: what it records (one slide) every later step takes
        warn_unkeyed_slides(adata_st, "slide_key")
    n_top_genes = check_positive_int(n_top_genes, name="n_top_genes")
    if layer is not None:
        for a, name in ((adata_st, "adata_st"), (adata_sc, "adata_sc")):
            if layer not in a.layers:
                msg = f"`layer`={layer!r} is not in `{name}.layers`; available: {layer_names(a)}."
                raise KeyError(msg)
    st, sc = shared_genes(adata_st, adata_sc, min_shared=min_shared)
    if layer is not None:
        st.X, sc.X = st.layers[layer].copy(), sc.layers[layer].copy()
    st.X, sc.X = _scanpy_ready(st.X), _scanpy_ready(sc.X)
    for a, name in ((st, "adata_st"), (sc, "adata_sc")):
        check_finite_matrix(a.X, name)
        _check_expression_range(a.X, name, layer)
    # "st:" keeps a slide that happens to be called "sc" out of the SC cells' batch
    # object arrays: NumPy 1 has no addition of fixed-width strings (np.full(n, "")), NumPy 2 has
    slides = (
        st.obs[slide_key].astype(str).to_numpy(dtype=object)
        if slide_key is not None
        else np.full(st.n_obs, "", dtype=object)
    )
    batch = np.concatenate(["st:" + slides, np.full(sc.n_obs, "sc", dtype=object)])
    _check_every_batch_has_counts(batch, np.concatenate([empty_rows(st.X), empty_rows(sc.X)]), slide_key, st.n_vars)
    how_st = _normalize_log(st, "adata_st", normalize=normalize)
    how_sc = _normalize_log(sc, "adata_sc", normalize=normalize)
    both = ad.AnnData(X=ad.concat([st, sc], join="inner").X, var=st.var[[]].copy())
    both.obs["gears_batch"] = batch
    if normalize is False and not looks_logged(both):  # scanpy's gene choice reads log values: log1p for it alone
        both.X = both.X.log1p() if sp.issparse(both.X) else np.log1p(both.X)
    highly_variable_genes(both, batch_key="gears_batch", n_top_genes=n_top_genes)
    hv_cols = [c for c in both.var.columns if c.startswith(("highly_variable", "means", "dispersions"))]
    params = {
        "slide_key": slide_key or "",
        "n_top_genes": int(n_top_genes),
        "layer": layer or "",
        "subset": subset,
        "n_shared_genes": int(st.n_vars),
        "normalize": "auto" if normalize is None else bool(normalize),
        "normalisation_st": how_st,
        "normalisation_sc": how_sc,
    }
    out = []
    for a in (st, sc):
        for c in hv_cols:
            a.var[c] = both.var[c].to_numpy()
        if subset:
            a = a[:, a.var["highly_variable"].to_numpy()].copy()
        out.append(a)
    for a, name in zip(out, ("adata_st", "adata_sc"), strict=True):
        params[f"n_empty_{name.removeprefix('adata_')}"] = _warn_empty(a, name)
    for a in out:
        write_record(a, Key.prepare, params)
    return out[0], out[1]


def _check_every_batch_has_counts(batch: np.ndarray, empty: np.ndarray, slide_key: str | None, n_genes: int) -> None:
    """Raise before the genes are chosen when a slide, or the whole SC data set, has no count in the shared genes.

    Such a batch holds no information, and scanpy's per-batch gene choice failed on it with
    "Cannot cut empty array"; it is usually a wrong ``layer`` or gene identifiers that match by
    chance.
    """
    for b in dict.fromkeys(batch):
        if empty[batch == b].all():
            where = "`adata_sc`" if b == "sc" else f"slide {b[3:]!r} of `adata_st`" if slide_key else "`adata_st`"
            msg = (
                f"{where} has no counts in the {n_genes} shared genes; check the matrix passed (`layer`, or `X` "
                "emptied by an earlier step) and that the gene identifiers of both data sets mean the same genes, "
                "or drop that data before `prepare`."
            )
            raise ValueError(msg)


def _warn_empty(adata: AnnData, name: str) -> int:
    """Warn about observations without a single count in the genes kept; return how many there are.

    Such an observation says nothing about its cell type or position, yet it gets an embedding like
    any other, and a reconstruction places such a cell somewhere (an anchored one with the slide's
    uncertainty, an intrinsic one with an ordinary uncertainty). They are kept (dropping them would
    change the observations behind the user's back) but counted in ``uns['gears_prepare']`` and
    named in a warning, with the fix.
    """
    n_empty = int(empty_rows(adata.X).sum())
    if n_empty:
        logger.warning(
            "%d of the %d observations of %s have no counts in the %d genes kept; they carry no information "
            "on type or position, yet a reconstruction would place them somewhere (an anchored one gives them the "
            "slide's uncertainty, an intrinsic one an ordinary uncertainty). Drop them before `prepare` (keep the "
            "observations with counts in the genes of `gx.pp.shared_genes`), or keep more genes (a larger "
            "`n_top_genes`, or `subset=False`).",
            n_empty,
            adata.n_obs,
            name,
            adata.n_vars,
        )
    return n_empty
