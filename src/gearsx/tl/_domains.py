"""``gx.tl.cluster_domains``: spatial domains from a representation (see :ref:`gears-domains`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gearsx._anndata import check_distinct_positions, check_key_added, get_obs_rep, resolve_slide_key, write_record
from gearsx._keys import Key
from gearsx._utils import check_coords, check_positive_int, checks_flags, n_distinct_rows, renamed_arguments

from . import _clustering

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["cluster_domains", "domain_representation"]

logger = logging.getLogger(__name__)

_METHODS = ("mclust", "scan", "leiden", "kmeans")


def _block(adata: AnnData, rep: str):
    """``obsm[rep]`` (or ``X`` for ``rep='X'``, sparse kept sparse) as a finite 2-D matrix; errors say how to get it."""
    hints = {
        Key.domain_embedding: "run gx.tl.domain_embedding first",
        Key.backbone: "run gx.tl.domain_embedding (the default representation) or gx.tl.fit_encoder first",
        Key.embedding: "run gx.tl.fit_encoder first, which writes 'X_gears' and 'X_gears_backbone'",
        "X_pca": "run sc.pp.pca first",
        Key.image: "run gx.tl.embed_patches first",
    }
    hint = hints.get(rep, "check the key, or pass 'X'")
    if rep == "X" and sp.issparse(adata.X):
        return adata.X
    return get_obs_rep(adata, use_rep=rep, dense=True, hint=hint)


#: ``n_pcs='auto'``: representations wider than this many columns (and ``X``) are reduced by PCA ...
AUTO_PCA_ABOVE = 50
#: ... to this many components; narrower ones (learned embeddings such as ``X_gears_domain``) are clustered as they are.
AUTO_N_PCS = 20


def domain_representation(
    adata: AnnData,
    use_rep: str | Sequence[str] = Key.backbone,
    *,
    n_pcs: int | Literal["auto"] | None = "auto",
    slide_key: str | None = None,
    random_state: int = 0,
) -> np.ndarray:
    """Build the feature matrix that :func:`~gearsx.tl.cluster_domains` clusters: fused representations, then PCA.

    A list of keys is fused by concatenating standardised blocks: each block is centred
    and divided by the square root of its total variance, so every block carries the same
    total variance whatever its width or units (a 1,536-d image embedding does not drown a
    30-d expression PCA). Then, when ``n_pcs`` is smaller than the width, the PCA of the
    result (:func:`scanpy.pp.pca`, which keeps sparse ``X`` sparse) is returned.

    ``n_pcs='auto'`` reduces wide matrices (``X``, the 256-d encoder backbone, image features:
    more than 50 columns) to 20 principal components. A narrow learned embedding (the 30-d
    ``X_gears_domain``) of one slide is kept whole: it was trained to be clustered, and dropping a
    third of its axes throws away part of what separates its domains. When the observations
    span several slides (``obs[slide_key]``), narrow embeddings are reduced to 20 components
    too: the last axes of a joint embedding hold little variance and mostly tell the slides
    apart, and mclust's model, which does not care about the scale of an axis, would weigh
    them like the domain axes (see :ref:`gears-domains`).

    Parameters
    ----------
    adata
        Annotated data matrix.
    use_rep
        ``obsm`` key(s), or ``'X'``.
    n_pcs
        Number of principal components (``None``: no PCA, not allowed with ``'X'``; ``'auto'``: above).
    slide_key
        ``obs`` column of the slides, for ``n_pcs='auto'``. ``None`` takes the column recorded by an
        earlier gearsx step (:func:`gearsx.tl.domain_embedding`, :func:`gearsx.tl.fit_encoder`, ...);
        with no record the data are one slide.
    random_state
        Seed of the PCA solver.

    Returns
    -------
    ``(n_obs, n_features)`` float array.

    Examples
    --------
    >>> import gearsx as gx
    >>> st, _ = gx.datasets.simulate_tissue(n_slides=1, n_cells_per_slide=2000, random_state=0)
    >>> gx.tl.domain_representation(st, "X", n_pcs=10).shape[1]
    10
    """
    random_state = check_positive_int(random_state, name="random_state", minimum=0)
    import scanpy as sc
    import scipy.sparse as sp

    reps = [use_rep] if isinstance(use_rep, str) else list(use_rep)
    if not reps:
        msg = "`use_rep` is an empty list; give at least one obsm key."
        raise ValueError(msg)
    twice = sorted({r for r in reps if reps.count(r) > 1})
    if twice:  # fused twice, a block would silently carry double weight
        msg = f"`use_rep` lists {twice} more than once; name each representation once."
        raise ValueError(msg)
    blocks = [_block(adata, r) for r in reps]
    if len(blocks) == 1:
        x = blocks[0]
    else:
        dense = []
        for r, b in zip(reps, blocks, strict=True):
            b = b.toarray() if sp.issparse(b) else b
            b = b - b.mean(0)
            total = float((b**2).sum() / max(len(b) - 1, 1))
            if total <= 0:
                msg = f"`use_rep={r!r}` is constant over all observations; it cannot be fused."
                raise ValueError(msg)
            dense.append(b / np.sqrt(total))
        x = np.hstack(dense)
    if isinstance(n_pcs, str):
        if n_pcs != "auto":
            msg = f"`n_pcs` must be an integer, None or 'auto'; got {n_pcs!r}."
            raise ValueError(msg)
        wide = "X" in reps or sp.issparse(x) or x.shape[1] > AUTO_PCA_ABOVE
        n_pcs = AUTO_N_PCS if wide or _n_slides(adata, slide_key) > 1 else None
    if n_pcs is None:
        if sp.issparse(x):
            msg = "`n_pcs=None` with a sparse `use_rep='X'` would cluster the full gene space; give `n_pcs`."
            raise ValueError(msg)
        return np.asarray(x, dtype=np.float64)
    n_pcs = check_positive_int(n_pcs, name="n_pcs")
    if n_pcs >= min(x.shape):
        if sp.issparse(x):
            x = x.toarray()
        return np.asarray(x, dtype=np.float64)
    return np.asarray(sc.pp.pca(x, n_comps=n_pcs, random_state=random_state), dtype=np.float64)


def _check_method_options(method: str, backend: str, options: dict) -> None:
    """Raise a :class:`TypeError` naming the options ``method`` does not take, and listing the ones it does."""
    import inspect

    fn = {
        "mclust": _clustering.mclust_r if backend == "r" else _clustering.mclust_eee,
        "scan": _clustering.scan,
        "leiden": _clustering.leiden,
        "kmeans": _clustering.kmeans,
    }[method]
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("x", "n_clusters", "random_state")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        where = f"method={method!r}" + (", backend='r'" if method == "mclust" and backend == "r" else "")
        msg = f"`cluster_domains({where})` takes no option {', '.join(map(repr, unknown))}; its options: {allowed}."
        raise TypeError(msg)


def _n_slides(adata: AnnData, slide_key: str | None) -> int:
    """Count the slides in ``obs[slide_key]`` (or the recorded slide column); 1 without one."""
    slide_key = resolve_slide_key(adata, slide_key, warn=False)  # a count: the caller warns where neighbours matter
    return 1 if slide_key is None else int(adata.obs[slide_key].nunique())


#: Neighbours in the refinement vote by default: the first ring of a Visium hexagonal grid.
DEFAULT_VOTE = 6


@renamed_arguments(refine_k="n_spatial_neighbors")
@checks_flags
def cluster_domains(
    adata: AnnData,
    *,
    method: Literal["mclust", "scan", "leiden", "kmeans"] = "mclust",
    use_rep: str | Sequence[str] | None = None,
    n_clusters: int | None = None,
    n_pcs: int | Literal["auto"] | None = "auto",
    backend: Literal["python", "r"] = "python",
    refine: bool = False,
    n_spatial_neighbors: int | None = None,
    spatial_key: str = Key.spatial,
    slide_key: str | None = None,
    random_state: int = 0,
    key_added: str = "gears_domain",
    copy: bool = False,
    **method_kwargs,
) -> AnnData | None:
    """Spatial domains by clustering a representation (see :ref:`gears-domains`).

    The methods are:

    ``'mclust'``
        Gaussian mixture with mclust's EEE model (one shared full covariance) fitted by EM
        from a Ward-agglomeration start plus k-means++ restarts
        (written here, see ``gearsx.tl._clustering.mclust_eee``); ``n_clusters=None`` picks 2-9 by BIC.
        ``backend='r'`` runs R's ``mclust::Mclust(modelNames='EEE')`` through rpy2 and
        raises with install instructions when R, mclust or rpy2 is missing. There is no
        silent fallback between backends or methods. Options (``method_kwargs``, Python
        backend): ``init='hc'`` (or ``'kmeans'``: the k-means starts alone), ``n_init=10``,
        ``max_iter=500``, ``tol=1e-5``.
    ``'scan'``
        SCAN (Van Gansbeke et al., 2020): mine kNN in the representation, train a
        clustering head so points and their neighbours agree (with an entropy term against
        collapse), then self-label confident points. Also writes the head's embedding to
        ``obsm['X_scan']``. Options (``method_kwargs``): ``n_neighbors=20``, ``n_hidden=128``,
        ``n_heads=5``, ``entropy_weight=5.0``, ``max_epochs=100``, ``self_label_epochs=30``,
        ``threshold=0.99`` (in ``(0, 1)``), ``batch_size=256``, ``lr=1e-3``, ``noise=0.1``,
        ``accelerator='auto'``, ``progress``.
    ``'leiden'``
        :func:`scanpy.pp.neighbors` + :func:`scanpy.tl.leiden` (igraph) on a private copy of
        the representation (your ``obsp`` graphs are untouched); with ``n_clusters`` the
        resolution is bisected to reach it. Options: ``resolution=1.0``, ``n_neighbors=15``.
    ``'kmeans'``
        :class:`sklearn.cluster.KMeans` with ``n_init=10`` k-means++ restarts.

    ``refine=True`` then relabels every observation by a majority vote over itself and its
    ``n_spatial_neighbors`` nearest physical neighbours in ``obsm[spatial_key]`` (within each slide of
    ``obs[slide_key]``); the default, 6, is the first ring of a Visium hexagonal grid.

    The default representation is the spatially aware ``obsm['X_gears_domain']`` of
    :func:`gearsx.tl.domain_embedding` when it exists, else the geometry encoder's last hidden
    layer ``obsm['X_gears_backbone']`` (:func:`gearsx.tl.fit_encoder`); the choice is logged
    and recorded in ``uns[key_added]['params']['use_rep']`` (see :ref:`gears-domains`;
    :doc:`/benchmarks` compares them on DLPFC and osmFISH).

    Image features: ``use_rep='X_image'`` after :func:`gearsx.tl.embed_patches`; fuse image
    and expression with ``use_rep=['X_gears_backbone', 'X_image']`` (see
    :func:`domain_representation`).

    Parameters
    ----------
    adata
        Annotated data matrix.
    method
        Clustering method (above).
    use_rep
        ``obsm`` key(s) to cluster (``'X'``: the expression matrix); a list is fused. ``None``:
        the domain embedding, else the encoder's backbone (above).
    n_clusters
        Number of domains (required for ``'scan'`` and ``'kmeans'``).
    n_pcs
        PCA of the representation before clustering (``None``: cluster it as is; ``'auto'``:
        20 components for representations wider than 50 columns, for ``X`` and for any
        representation of several slides; none for a narrower one of one slide, such as the
        domain embedding; see :func:`domain_representation`).
    backend
        mclust backend, ``'python'`` or ``'r'``.
    refine
        Spatial majority-vote refinement.
    n_spatial_neighbors
        Physical neighbours in the vote of ``refine=True`` (formerly ``refine_k``); ``None``: 6, the
        first ring of a Visium hexagonal grid. Fewer than the largest slide's spots; a smaller slide
        votes over all its other spots. Given with ``refine=False`` it would change nothing, and is
        an error.
    spatial_key
        ``obsm`` key of the coordinates (for ``refine``).
    slide_key
        ``obs`` column with slides, so refinement never mixes slides (and ``n_pcs='auto'`` knows
        whether the representation spans several). ``None`` takes the column recorded by
        :func:`gearsx.tl.domain_embedding` or :func:`gearsx.tl.fit_encoder` (or
        :func:`gearsx.pp.mean_center_per_slide`, :func:`gearsx.pp.prepare`) in ``uns``; with no
        record the data are one slide (with ``refine=True``, a warning names ``obs['slide']``,
        ``obs['library_id']``, ``obs['batch']`` or a similar column when it holds several values).
    random_state
        Seed; the same seed gives the same labels.
    key_added
        ``obs`` column for the labels; parameters go to ``uns[key_added]``.
    copy
        Return a modified copy instead of writing to ``adata``.
    **method_kwargs
        Options of the chosen method (above).

    Returns
    -------
    ``None`` (or the copy) — sets ``obs[key_added]`` (categorical, ``'0'``, ``'1'``, ...),
    ``uns[key_added]`` (``params``, ``n_domains`` found and the method's diagnostics, e.g. BIC)
    and, for SCAN, ``obsm['X_scan']``. Fewer domains than ``n_clusters`` (clusters left empty, or
    absorbed by the refinement vote) are named in a warning.

    Examples
    --------
    >>> import gearsx as gx
    >>> import scanpy as sc
    >>> from sklearn.metrics import adjusted_rand_score
    >>> st, _ = gx.datasets.simulate_tissue(n_slides=1, n_cells_per_slide=20000, random_state=0)  # 538 spots
    >>> sc.pp.normalize_total(st)
    >>> sc.pp.log1p(st)
    >>> gx.tl.domain_embedding(st, mask_var=None, max_epochs=20, progress=False)
    >>> gx.tl.cluster_domains(st, method="mclust", n_clusters=6, refine=True)  # on obsm['X_gears_domain']
    >>> st.obs["gears_domain"].nunique()
    6
    >>> adjusted_rand_score(st.obs["domain"], st.obs["gears_domain"]) > 0.9  # the planted domains
    True

    Spatial communities of a reconstructed layout compose with scanpy instead::

        sc.pp.neighbors(adata_sc, use_rep="X_gears_spatial")
        sc.tl.leiden(adata_sc, key_added="gears_community")
    """
    random_state = check_positive_int(random_state, name="random_state", minimum=0)
    check_key_added(key_added)
    if method not in _METHODS:
        msg = f"`method` must be one of {_METHODS}; got {method!r}."
        raise ValueError(msg)
    if backend not in ("python", "r"):
        msg = f"`backend` must be 'python' or 'r'; got {backend!r}."
        raise ValueError(msg)
    if backend == "r" and method != "mclust":
        msg = f"`backend='r'` applies to method='mclust' only; got method={method!r}."
        raise ValueError(msg)
    if n_clusters is not None:
        n_clusters = check_positive_int(n_clusters, name="n_clusters", minimum=2)
    elif method in ("scan", "kmeans"):
        msg = f"method={method!r} needs `n_clusters` (an integer >= 2)."
        raise ValueError(msg)
    _check_method_options(method, backend, method_kwargs)
    if n_clusters is not None and adata.n_obs < n_clusters:
        msg = f"`n_clusters={n_clusters}` exceeds the number of observations (adata has shape {adata.shape})."
        raise ValueError(msg)
    if use_rep is None:
        use_rep = Key.domain_embedding if Key.domain_embedding in adata.obsm else Key.backbone
        logger.info("cluster_domains: clustering obsm[%r]", use_rep)
    coords = groups = None
    slide_key = resolve_slide_key(adata, slide_key, warn=refine)  # slides matter to the vote's neighbours
    if key_added == slide_key:
        msg = (
            f"`key_added`={key_added!r} is the slide column (`slide_key`): the domain labels would replace which "
            "slide each spot belongs to. Pick another name (or keep the default 'gears_domain')."
        )
        raise ValueError(msg)
    if not refine and n_spatial_neighbors is not None:
        msg = (
            f"`n_spatial_neighbors`={n_spatial_neighbors!r} sets the vote of `refine=True`, but refine is False, so it "
            "would change nothing: pass refine=True, or leave it out."
        )
        raise ValueError(msg)
    if refine:
        if spatial_key not in adata.obsm:
            msg = f"`refine=True` needs coordinates in `adata.obsm[{spatial_key!r}]`; available: {list(adata.obsm.keys())}."
            raise KeyError(msg)
        coords = check_coords(adata.obsm[spatial_key], name=f"obsm[{spatial_key!r}]")
        n_spatial_neighbors = check_positive_int(
            DEFAULT_VOTE if n_spatial_neighbors is None else n_spatial_neighbors, name="n_spatial_neighbors"
        )
        if slide_key is not None:
            groups = adata.obs[slide_key].to_numpy()
        check_distinct_positions(coords, groups, spatial_key=spatial_key, slide_key=slide_key)
        largest = int(pd.Series(groups).value_counts().max()) if groups is not None else adata.n_obs
        if n_spatial_neighbors >= largest:  # every slide would vote over all its spots: no neighbourhood left
            msg = (
                f"`n_spatial_neighbors`={n_spatial_neighbors} needs more spots than the largest slide holds "
                f"({largest}); lower it (6 is the first ring of a Visium grid)."
            )
            raise ValueError(msg)

    x = domain_representation(adata, use_rep, n_pcs=n_pcs, slide_key=slide_key, random_state=random_state)
    need = 2 if n_clusters is None else n_clusters
    if (distinct := n_distinct_rows(x)) < need:
        asked = "the 2 domains any clustering needs" if n_clusters is None else f"the {need} domains asked for"
        msg = (
            f"The representation to cluster (`use_rep`={use_rep!r}) holds {distinct} distinct row(s), fewer than "
            f"{asked}: clustering it would leave domains empty. Check that it was computed (not a placeholder), "
            "pass another `use_rep`, or lower `n_clusters`."
        )
        raise ValueError(msg)
    emb = None
    if method == "mclust":
        if backend == "r":
            labels, info = _clustering.mclust_r(x, n_clusters, random_state=random_state, **method_kwargs)
        else:
            labels, info = _clustering.mclust_eee(x, n_clusters, random_state=random_state, **method_kwargs)
    elif method == "scan":
        labels, emb, info = _clustering.scan(x, n_clusters, random_state=random_state, **method_kwargs)
    elif method == "leiden":
        labels, info = _clustering.leiden(x, n_clusters, random_state=random_state, **method_kwargs)
    else:
        labels, info = _clustering.kmeans(x, n_clusters, random_state=random_state, **method_kwargs)
    if refine:
        before = labels
        labels = _clustering.spatial_majority_vote(labels, coords, k=n_spatial_neighbors, groups=groups)
        info["refine_changed"] = int((before != labels).sum())

    adata = adata.copy() if copy else adata
    # Relabel 0..K-1 by decreasing size so label names do not depend on cluster order.
    uniq, counts = np.unique(labels, return_counts=True)
    rank = {u: r for r, u in enumerate(uniq[np.argsort(-counts, kind="stable")])}
    names = [str(rank[u]) for u in labels]
    adata.obs[key_added] = pd.Categorical(names, categories=[str(i) for i in range(len(uniq))])
    if emb is not None:
        adata.obsm["X_scan"] = emb
    params = {
        "method": method,
        "use_rep": use_rep if isinstance(use_rep, str) else list(use_rep),
        "n_clusters": n_clusters,
        "n_pcs": n_pcs,
        "n_features": int(x.shape[1]),  # what was clustered (after the PCA that n_pcs asked for, if any)
        "backend": backend,
        "refine": refine,
        "n_spatial_neighbors": n_spatial_neighbors if refine else None,
        "slide_key": slide_key,
        "random_state": random_state,
        **{k: v for k, v in method_kwargs.items() if isinstance(v, int | float | str | bool)},
    }
    info["n_domains"] = len(uniq)
    write_record(adata, key_added, params, **info)
    logger.info("cluster_domains(%s): %d domains in obs[%r]", method, len(uniq), key_added)
    if n_clusters is not None and len(uniq) < n_clusters:
        logger.warning(
            "cluster_domains: %d domains asked for, %d found in obs[%r] (%s). Check the representation "
            "(`use_rep`; obsm['X_gears_domain'] from gx.tl.domain_embedding separates domains best), or lower "
            "`n_clusters`.",
            n_clusters, len(uniq), key_added,
            "the refinement vote absorbed clusters smaller than its neighbourhood; refine=False keeps them"
            if refine and len(np.unique(before)) > len(uniq)
            else "the method left clusters empty",
        )  # fmt: skip
    return adata if copy else None
