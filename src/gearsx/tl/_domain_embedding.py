"""``gx.tl.domain_embedding``: a spatially aware representation for domain clustering (see :ref:`gears-domains`)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from gearsx._anndata import (
    check_distinct_positions,
    check_finite_matrix,
    check_key_added,
    check_log_expression,
    check_obsm_key,
    get_obs_rep,
    prepared_as_given,
    resolve_slide_key,
    set_obs_rep,
    write_record,
)
from gearsx._keys import Key
from gearsx._utils import (
    check_coords,
    check_nonnegative_number,
    check_positive_int,
    check_positive_number,
    checks_flags,
)
from gearsx.geometry._graph import spatial_edges
from gearsx.pp._centering import slide_means

from ._smooth import spatial_smoothing_operator

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["domain_embedding"]

logger = logging.getLogger(__name__)


def _center_per_slide(x: np.ndarray, slides: np.ndarray | None) -> np.ndarray:
    """Subtract each slide's column means (float32; :func:`gearsx.pp._centering.slide_means`)."""
    codes = np.zeros(len(x), dtype=np.int64) if slides is None else np.unique(slides, return_inverse=True)[1]
    return (x - slide_means(x, codes, int(codes.max()) + 1)[codes]).astype(np.float32)


def _expression(adata: AnnData, layer: str | None, mask_var: str | None) -> np.ndarray:
    """``X`` (or ``layers[layer]``) on the genes of ``var[mask_var]``, dense, finite, float32."""
    x = get_obs_rep(adata, layer=layer, arg="layer")
    if mask_var is not None:
        if mask_var not in adata.var:
            msg = (
                f"`mask_var={mask_var!r}` is not a column of `adata.var`; run "
                "`sc.pp.highly_variable_genes(adata, flavor='seurat_v3', n_top_genes=3000)` on the counts first, "
                "or pass `mask_var=None` to use all genes."
            )
            raise KeyError(msg)
        mask = adata.var[mask_var].to_numpy()
        if mask.dtype != bool or not mask.any():
            msg = f"`adata.var[{mask_var!r}]` must be a boolean column with at least one True (`mask_var`)."
            raise ValueError(msg)
        x = x[:, mask]
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    name = f"layers[{layer!r}]" if layer else "X"
    check_finite_matrix(x, name)
    check_log_expression(
        x,
        name,
        "run `sc.pp.normalize_total(adata, target_sum=1e4)` and `sc.pp.log1p(adata)` first, or pass `layer=`",
        as_given=prepared_as_given(adata, layer),
    )
    return x.astype(np.float32, copy=False)


def _input_matrix(
    adata: AnnData, layer: str | None, mask_var: str | None, image_key: str | None, image_weight: float, slides
) -> np.ndarray:
    """Build the autoencoder's input: expression centred per slide, then (optionally) the image view.

    The image features are centred per slide and scaled so that their total variance is
    ``image_weight`` times the expression's, whatever their width or units.
    """
    x = _center_per_slide(_expression(adata, layer, mask_var), slides)
    if image_key is None:
        return x
    hint = "run gx.pp.extract_patches and gx.tl.embed_patches first"
    img = get_obs_rep(adata, use_rep=image_key, dense=True, dtype=np.float32, arg="image_key", hint=hint)
    img = _center_per_slide(img, slides)
    total = float((img.astype(np.float64) ** 2).sum())
    if total <= 0:
        msg = f"`image_key={image_key!r}`: the image features are constant within every slide; nothing to learn from."
        raise ValueError(msg)
    scale = np.sqrt(image_weight * float((x.astype(np.float64) ** 2).sum()) / total)
    return np.hstack([x, (img * scale).astype(np.float32)])


@checks_flags
def domain_embedding(
    adata: AnnData,
    *,
    slide_key: str | None = None,
    spatial_key: str = Key.spatial,
    layer: str | None = None,
    mask_var: str | None = "highly_variable",
    image_key: str | None = None,
    image_weight: float = 1.0,
    n_neighbors: int = 6,
    n_hops: int = 0,
    n_hidden: int = 128,
    n_latent: int = 30,
    max_epochs: int = 500,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    accelerator: str = "auto",
    progress: bool | None = None,
    random_state: int = 0,
    key_added: str = Key.domain_embedding,
    copy: bool = False,
) -> AnnData | None:
    """Learn a representation of every spot *and its neighbourhood* for spatial domains (see :ref:`gears-domains`).

    A graph attention autoencoder (:class:`gearsx.module.GraphAttentionAutoencoder`, after
    STAGATE) is trained on the spatial kNN graph (:func:`gearsx.geometry.spatial_edges`, within each slide) to
    reconstruct every spot's expression from its attention-weighted neighbourhood. Its latent
    code varies smoothly inside a tissue domain and changes at domain borders, which is what
    :func:`gearsx.tl.cluster_domains` needs; that function uses ``obsm['X_gears_domain']`` by
    default once it exists.

    Several slides are embedded jointly in one model: the expression is centred per slide
    (removing the slides' mean shift) and the graph never links two slides, so one clustering
    of all spots gives domain labels that agree across slides.

    Histology enters as an optional second view: ``image_key`` names image features in
    ``obsm`` (e.g. ``'X_image'`` from :func:`gearsx.pp.extract_patches` and
    :func:`gearsx.tl.embed_patches`); they are centred per slide, scaled to carry
    ``image_weight`` times the expression's total variance, and appended to the input, so the
    autoencoder reconstructs both.

    ``n_hops`` widens the neighbourhood after training: the code is followed by its mean over
    each spot's graph neighbourhood, repeated ``n_hops`` times (as CellCharter aggregates
    neighbourhoods), so the representation holds ``n_latent * (n_hops + 1)`` columns (wider than 50:
    :func:`gearsx.tl.cluster_domains` reduces it to 20 principal components under ``n_pcs='auto'``).

    Parameters
    ----------
    adata
        Spatial data: log-normalised expression in ``X`` (or ``layers[layer]``; integer counts
        are an error) and coordinates in ``obsm[spatial_key]``. Scanpy's standard recipe works best (see :ref:`gears-domains`):
        ``sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=3000)`` on the
        counts, then ``sc.pp.normalize_total(adata, target_sum=1e4)`` and ``sc.pp.log1p(adata)``.
    slide_key
        ``obs`` column of the slides. ``None`` takes the column recorded by an earlier gearsx
        step (:func:`gearsx.tl.fit_encoder`, :func:`gearsx.pp.mean_center_per_slide`); with no
        record the data are one slide (a warning names ``obs['slide']``, ``obs['library_id']``,
        ``obs['batch']`` or a similar column when it holds several values).
    spatial_key
        ``obsm`` key of the coordinates.
    layer
        Layer with the log-normalised expression (``None``: ``X``).
    mask_var
        Boolean ``var`` column selecting the genes (scanpy's convention; ``None``: all genes).
        About 3,000 highly variable genes (``'seurat_v3'`` flavour, on counts) work well on Visium.
    image_key
        ``obsm`` key of image features (optional second view).
    image_weight
        Total variance of the image view relative to the expression view.
    n_neighbors
        Spatial neighbours of each spot (6: the first ring of a Visium grid).
    n_hops
        Neighbourhood means appended to the code (``0``: the code alone). A Visium spot already
        spans several cells; at single-cell resolution one cell's neighbourhood is narrow, and
        ``n_hops=1`` helps there (osmFISH regions: ARI 0.671 against 0.643, 3 seeds), while on
        Visium it does not (DLPFC layers: 0.552 against 0.561, and 0.529 against 0.536 with the
        three slides embedded and clustered together; see :ref:`gears-domains`).
    n_hidden, n_latent
        Widths of the hidden layer and of the representation.
    max_epochs
        Training epochs (one full-graph step each).
    lr, weight_decay
        Adam's learning rate and L2 penalty.
    accelerator
        ``'auto'`` (CUDA when present), ``'cpu'`` or ``'cuda'``.
    progress
        Show a progress bar (``None``: ``gx.settings.progress_bar``).
    random_state
        Seed of the weights' initialisation.
    key_added
        ``obsm`` key of the representation; parameters go to ``uns[key_added]``.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None`` (or the copy) — sets ``obsm[key_added]`` (``n_latent * (n_hops + 1)`` wide) and ``uns[key_added]``
    (``params`` with the gearsx version, the final training ``loss`` and ``time_s``).

    Examples
    --------
    >>> import gearsx as gx
    >>> import scanpy as sc
    >>> st, _ = gx.datasets.simulate_tissue(n_slides=1, n_cells_per_slide=20000, random_state=0)
    >>> sc.pp.normalize_total(st)
    >>> sc.pp.log1p(st)
    >>> gx.tl.domain_embedding(st, mask_var=None, max_epochs=20, progress=False)
    >>> st.obsm["X_gears_domain"].shape  # 538 spots, n_latent=30
    (538, 30)
    """
    random_state = check_positive_int(random_state, name="random_state", minimum=0)
    from gearsx.module import GraphAttentionAutoencoder
    from gearsx.train import GraphAutoencoderTrainingPlan, GraphBatch, fit_lightning

    check_key_added(key_added, spatial_key=spatial_key, owner="gx.tl.domain_embedding")
    check_obsm_key(adata, spatial_key, "spatial_key", "the spot coordinates, e.g. 'spatial' from sc.read_visium")
    coords = check_coords(adata.obsm[spatial_key], name=f"obsm[{spatial_key!r}]")
    slide_key = resolve_slide_key(adata, slide_key)
    slides = adata.obs[slide_key].astype(str).to_numpy() if slide_key is not None else None
    check_distinct_positions(coords, slides, spatial_key=spatial_key, slide_key=slide_key)
    for name, value in (("n_hidden", n_hidden), ("n_latent", n_latent), ("max_epochs", max_epochs)):
        check_positive_int(value, name=name)
    n_hops = check_positive_int(n_hops, name="n_hops", minimum=0)
    for name, value in (("lr", lr), ("image_weight", image_weight)):
        check_positive_number(value, name=name)
    check_nonnegative_number(weight_decay, name="weight_decay")
    x = _input_matrix(adata, layer, mask_var, image_key, image_weight, slides)
    src, dst = spatial_edges(coords, n_neighbors, groups=slides)

    t0 = time.perf_counter()
    module = GraphAttentionAutoencoder(x.shape[1], n_hidden=n_hidden, n_latent=n_latent)
    plan = GraphAutoencoderTrainingPlan(module, lr=lr, weight_decay=weight_decay)
    graph = GraphBatch(x, src, dst)  # tensors built once: for training and for the final encoding
    history, device = fit_lightning(
        plan,
        graph,
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices="auto",
        progress=progress,
        random_state=random_state,
        reinitialise=True,
    )
    module = module.to(device).eval()
    import torch

    with torch.no_grad():
        z = module.encode(*(graph.batch[k].to(device) for k in ("x", "src", "dst")))[0].cpu().numpy()
    if n_hops:  # the mean over each spot and its graph neighbours (the autoencoder's graph), n_hops times
        mean = spatial_smoothing_operator(coords, n_neighbors, groups=slides)
        parts = [z]
        for _ in range(n_hops):
            parts.append(mean @ parts[-1])
        z = np.hstack(parts).astype(np.float32)
    elapsed = time.perf_counter() - t0

    adata = adata.copy() if copy else adata
    set_obs_rep(adata, z.astype(np.float32), obsm=key_added)
    params = {
        "slide_key": slide_key or "",
        "spatial_key": spatial_key,
        "layer": layer or "",
        "mask_var": mask_var or "",
        "image_key": image_key or "",
        "image_weight": image_weight,
        "n_neighbors": n_neighbors,
        "n_hops": n_hops,
        "n_hidden": n_hidden,
        "n_latent": n_latent,
        "max_epochs": max_epochs,
        "lr": lr,
        "weight_decay": weight_decay,
        "random_state": random_state,
        "n_features": int(x.shape[1]),
    }
    loss = float(history["train_total"].iloc[-1]) if "train_total" in history else float("nan")
    write_record(adata, key_added, params, loss=loss, time_s=elapsed)
    logger.info("domain_embedding: %d x %d in obsm[%r] (%.0f s)", *z.shape, key_added, elapsed)
    return adata if copy else None
