from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gearsx._anndata import check_obs_key, check_obsm_key, get_matrix
from gearsx._utils import check_positive_int

from ._probe import linear_probe

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["slide_separability"]


def slide_separability(
    adata: AnnData,
    *,
    slide_key: str,
    use_rep: str | None = None,
    layer: str | None = None,
    n_pcs: int = 50,
    n_splits: int = 5,
    random_state: int = 0,
) -> dict[str, float]:
    """How well a linear classifier tells the slides apart (a batch-effect diagnostic).

    A multinomial logistic regression is cross-validated (stratified ``n_splits``-fold)
    on the chosen representation and scored by balanced accuracy. The representation is
    centred and divided by one global scale rather than standardised per feature, so
    near-constant directions of an embedding cannot be inflated into a spurious signal. Values near
    ``chance`` (``1 / n_slides``) mean the slides are indistinguishable; values near 1
    mean a strong batch effect (see :ref:`gears-preprocessing`).

    Parameters
    ----------
    adata
        Annotated data matrix.
    slide_key
        ``obs`` column with the slide (batch) of each observation.
    use_rep
        ``obsm`` key of a representation to classify. ``None`` computes a PCA with
        ``n_pcs`` components of ``layer`` (or ``X``), which should then hold
        log-normalised (or centred) expression.
    layer
        Layer used when ``use_rep`` is ``None``.
    n_pcs
        Number of principal components when ``use_rep`` is ``None``.
    n_splits
        Number of cross-validation folds.
    random_state
        Seed of the PCA, the fold split and the classifier.

    Returns
    -------
    ``{'balanced_accuracy': ..., 'chance': ..., 'n_slides': ...}``

    Examples
    --------
    >>> import scanpy as sc, gearsx as gx
    >>> st, _ = gx.datasets.simulate_tissue(n_cells_per_slide=3000, random_state=0)
    >>> sc.pp.normalize_total(st)
    >>> sc.pp.log1p(st)
    >>> gx.metrics.slide_separability(st, slide_key="slide")["balanced_accuracy"] > 0.9
    True
    """
    from sklearn.decomposition import PCA

    check_obs_key(adata, slide_key, "slide_key")
    check_positive_int(n_splits, name="n_splits", minimum=2)
    labels = adata.obs[slide_key].astype(str).to_numpy()
    slides, counts = np.unique(labels, return_counts=True)
    if len(slides) < 2:
        msg = f"`adata.obs[{slide_key!r}]` holds a single slide; separability needs at least two."
        raise ValueError(msg)
    if counts.min() < n_splits:
        msg = f"Slide {slides[counts.argmin()]!r} has {counts.min()} observations; need >= n_splits={n_splits}."
        raise ValueError(msg)
    if use_rep is not None:
        check_obsm_key(adata, use_rep, "use_rep")
        x = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    else:
        mat = get_matrix(adata, layer)
        n_comp = check_positive_int(min(n_pcs, min(mat.shape) - 1), name="n_pcs")
        # PCA accepts CSR input directly (ARPACK on the implicitly centred matrix), so X is never densified.
        x = PCA(n_components=n_comp, random_state=random_state, svd_solver="arpack").fit_transform(mat)
    if not np.isfinite(x).all():
        msg = "The representation holds NaN or inf; clean the input before measuring separability."
        raise ValueError(msg)
    acc = linear_probe(x, labels, n_splits=n_splits, random_state=random_state)
    return {"balanced_accuracy": acc, "chance": 1.0 / len(slides), "n_slides": int(len(slides))}
