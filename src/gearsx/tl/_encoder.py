from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np

from gearsx._anndata import check_key_added, set_obs_rep, write_record
from gearsx._keys import Key
from gearsx._utils import check_positive_int, checks_flags, doc_params
from gearsx.model._adapter import MAX_STEPS, fit_params_doc

if TYPE_CHECKING:
    from anndata import AnnData

    from gearsx.model import SharedEncoder

__all__ = ["fit_adapter", "fit_encoder"]

logger = logging.getLogger(__name__)


@checks_flags
def fit_encoder(
    adata_st: AnnData,
    *,
    slide_key: str | None,
    spatial_key: str = Key.spatial,
    layer: str | None = Key.centered_layer,
    max_epochs: int | None = None,
    random_state: int = 0,
    key_added: str = Key.embedding,
    n_latent: int = 128,
    n_hidden: tuple[int, ...] = (512, 256),
    adversarial: bool = False,
    **train_kwargs,
) -> SharedEncoder:
    """Train the shared expression encoder on ST slides and write their embeddings (see :ref:`gears-encoder`).

    Parameters
    ----------
    adata_st
        ST slides; ``layer`` should hold mean-centred log expression (:func:`gearsx.pp.mean_center_per_slide`).
    slide_key
        ``obs`` column with the slide. ``None``: the column an earlier step recorded
        (:func:`gearsx.pp.prepare`, :func:`gearsx.pp.mean_center_per_slide`), else one slide.
    spatial_key
        ``obsm`` key of the coordinates (used only to pick InfoNCE positives).
    layer
        Expression layer.
    max_epochs
        Training epochs (``None``: heuristic, see :meth:`gearsx.model.SharedEncoder.train`).
    random_state
        Seed.
    key_added
        ``obsm`` key of the embeddings; the backbone representation goes to
        ``obsm[f'{key_added}_backbone']``.
    n_latent, n_hidden, adversarial
        Model hyper-parameters (:class:`gearsx.model.SharedEncoder`).
    **train_kwargs
        Passed to :meth:`gearsx.model.SharedEncoder.train`.

    Returns
    -------
    The trained :class:`gearsx.model.SharedEncoder`. Writes ``obsm[key_added]`` (the
    ``n_latent``-wide embedding, input of the geometry model), ``obsm[f'{key_added}_backbone']``
    (the last hidden layer, ``n_hidden[-1]`` wide: the default representation of
    :func:`gearsx.tl.cluster_domains`, see
    :meth:`~gearsx.model.SharedEncoder.get_latent_representation`) and
    ``uns['gears_encoder']`` with the parameters and diagnostics: ``slide_probe``
    (balanced accuracy of a 5-fold logistic regression predicting the slide, and its
    ``chance`` level), ``knn_overlap20`` (mean, and per slide: ``knn_overlap20_per_slide``, in
    the order of ``slides``) between embedding and physical neighbours, ``norm_ratio`` (max/min
    over slides of the embeddings' RMS norm), and ``encoder_id`` (:attr:`~gearsx.model.SharedEncoder.fingerprint`: the
    geometry model keeps it, so that cells adapted to another encoder are refused).

    Examples
    --------
    >>> import gearsx as gx
    >>> st, sc = gx.datasets.simulate_tissue(n_cells_per_slide=3000, random_state=0)
    >>> st, sc = gx.pp.prepare(st, sc, slide_key="slide", n_top_genes=100)
    >>> gx.pp.mean_center_per_slide(st, slide_key="slide")
    >>> model = gx.tl.fit_encoder(st, slide_key="slide", max_epochs=2, n_latent=16, progress=False)
    >>> st.obsm["X_gears"].shape[1], st.obsm["X_gears_backbone"].shape[1]
    (16, 256)
    """
    random_state = check_positive_int(random_state, name="random_state", minimum=0)
    from gearsx.metrics import knn_overlap, slide_separability
    from gearsx.model import SharedEncoder

    check_key_added(key_added, spatial_key=spatial_key, owner="gx.tl.fit_encoder")
    with SharedEncoder._restore_on_error(adata_st):  # a failed fit leaves adata_st unregistered
        SharedEncoder.setup_anndata(adata_st, layer=layer, slide_key=slide_key, spatial_key=spatial_key)
        model = SharedEncoder(adata_st, n_latent=n_latent, n_hidden=n_hidden, adversarial=adversarial)
        model.train(max_epochs=max_epochs, random_state=random_state, **train_kwargs)
    slide_key = model.setup_args["slide_key"]  # the recorded column when None was passed
    reps = model.get_representations(None, ("embedding", "backbone"))
    z = reps["embedding"]
    backbone_key = Key.backbone_of(key_added)
    set_obs_rep(adata_st, z, obsm=key_added)
    set_obs_rep(adata_st, reps["backbone"], obsm=backbone_key)
    slides = adata_st.obs[slide_key].astype(str).to_numpy() if slide_key is not None else np.full(adata_st.n_obs, "all")
    names = np.unique(slides)
    coords = np.asarray(adata_st.obsm[spatial_key], dtype=np.float64)
    overlap = {s: knn_overlap(z[slides == s], coords[slides == s], k=min(20, (slides == s).sum() - 1)) for s in names}
    rms = {s: float(np.sqrt((z[slides == s] ** 2).sum(1).mean())) for s in names}
    diag = {
        "knn_overlap20": float(np.average(list(overlap.values()), weights=[(slides == s).sum() for s in names])),
        # two arrays, not a dict keyed by slide: h5ad nests a key holding '/', and zarr refuses it
        "slides": np.array(names, dtype=object),
        "knn_overlap20_per_slide": np.array([overlap[s] for s in names]),
        "norm_ratio": float(max(rms.values()) / max(min(rms.values()), 1e-12)),
    }
    if len(names) > 1:
        probe = slide_separability(adata_st, slide_key=slide_key, use_rep=key_added, random_state=random_state)
        diag["slide_probe"] = {"balanced_accuracy": probe["balanced_accuracy"], "chance": probe["chance"]}
    params = {
        "slide_key": slide_key or "",
        "spatial_key": spatial_key,
        "layer": layer or "",
        "key_added": key_added,
        "backbone_key": backbone_key,
        "random_state": random_state,
        "n_latent": n_latent,
        "adversarial": adversarial,
        **{k: v for k, v in model.train_params_.items() if k != "random_state"},
    }
    write_record(adata_st, Key.encoder, params, encoder_id=model.fingerprint, **diag)
    shown = {k: v for k, v in diag.items() if k != "slides"}
    logger.info("encoder diagnostics: %s", {**shown, "knn_overlap20_per_slide": overlap})  # per slide by name
    return model


@doc_params(fit_params=fit_params_doc(4))
@checks_flags
def fit_adapter(
    adata_sc: AnnData,
    encoder: SharedEncoder,
    *,
    adata_st: AnnData | None = None,
    mode: Literal["linear"] = "linear",
    max_epochs: int = 30,
    max_steps: int | None = MAX_STEPS,
    batch_size: int = 512,
    lr: float = 1e-3,
    w_coral: float = 1.0,
    w_mmd: float = 1.0,
    w_identity: float = 0.1,
    support_tol: float = 1e-3,
    random_state: int = 0,
    key_added: str = Key.embedding,
    progress: bool | None = None,
) -> None:
    """Map SC embeddings into the ST embedding distribution with an affine adapter (see :ref:`gears-adapter`).

    Fits a :class:`gearsx.model.SCAdapter` (closed-form whitening-colouring start, then CORAL +
    RBF-MMD fine-tuning, outputs kept on the support of the ST embeddings), attaches it to
    ``encoder`` (saved with it) and writes the adapted SC embeddings and the alignment report.

    The map matches the query's mean and spread to the reference's, which removes a platform
    difference only when the query holds the tissue's mix of cells: fit it on the whole dissociated
    sample and subset afterwards. A single cell type, a sorted population or one region's cells,
    adapted alone, are stretched over the whole tissue and placed worse ("Map the whole sample" in
    the docs' "When to anchor").

    Parameters
    ----------
    adata_sc
        SC data with the encoder's genes and expression layer (for ``'gears_centered'``:
        ``gx.pp.mean_center_per_slide(adata_sc, slide_key=None)``).
    encoder
        A trained :class:`gearsx.model.SharedEncoder`.
    adata_st
        ST data to align to (default: the encoder's training data).
    mode
        Only ``'linear'`` (affine) is available.
    {fit_params}
    key_added
        ``obsm`` key of the adapted SC embeddings.

    Returns
    -------
    ``None``. Writes ``adata_sc.obsm[key_added]`` and ``adata_sc.uns['gears_adapter']``
    (``params``, and ``before``/``after`` diagnostics: ST-vs-SC domain-classifier balanced
    accuracy, CORAL, MMD, centroid distance, norm ratio, kNN mixing entropy and iLISI over 30
    neighbours, or ``2 m - 1`` for a query of ``m < 16`` cells; and
    ``encoder_id``, the encoder's :attr:`~gearsx.model.SharedEncoder.fingerprint`, which
    :func:`gearsx.tl.reconstruct` compares with the model's). The adapter is attached to the
    encoder (``encoder.adapter``) and saved with it.

    Examples
    --------
    >>> gx.tl.fit_adapter(adata_sc, encoder)  # doctest: +SKIP
    >>> adata_sc.uns["gears_adapter"]["after"]["domain_accuracy"]  # near 0.5: SC and ST mixed  # doctest: +SKIP
    """
    random_state = check_positive_int(random_state, name="random_state", minimum=0)
    from gearsx.model import SCAdapter

    adapter = SCAdapter(encoder, mode=mode)  # validates the encoder and the mode
    check_key_added(key_added, owner="gx.tl.fit_adapter")
    adapter.fit(
        adata_sc,
        adata_st,
        max_epochs=max_epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        w_coral=w_coral,
        w_mmd=w_mmd,
        w_identity=w_identity,
        support_tol=support_tol,
        random_state=random_state,
        progress=progress,
    )
    z_adapted = encoder.get_latent_representation(adata_sc, adapt=True)
    set_obs_rep(adata_sc, z_adapted, obsm=key_added)
    write_record(
        adata_sc,
        Key.adapter,
        {**adapter.params_, "key_added": key_added},
        encoder_id=encoder.fingerprint,
        **adapter.report_,
    )
