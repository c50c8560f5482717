"""Plots of the structure module's attention stored by ``gx.tl.attention`` and ``gx.tl.attention_summary``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from gearsx._anndata import obsm_coords
from gearsx._keys import Key
from gearsx._utils import check_positive_int, checks_flags
from gearsx.geometry._knn import tree_knn

from ._reconstruction import _axes, _finish, y_down

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

__all__ = ["attention", "attention_summary"]


def _no_model(model, name: str) -> None:
    if model is not None:
        msg = (
            f"gx.pl.{name} plots a stored result and never runs a model: compute it with "
            f"`gx.tl.{name}(adata, model, ...)`, then call `gx.pl.{name}(adata)`."
        )
        raise TypeError(msg)


def _stored(adata: AnnData, key: str, name: str, fields: tuple[str, ...]) -> dict:
    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or any(f not in entry for f in fields):
        msg = f"`adata.uns[{key!r}]` is missing or incomplete; run `gx.tl.{name}(adata, model, ...)` first."
        raise KeyError(msg)
    return entry


@checks_flags
def attention(
    adata: AnnData,
    model: object | None = None,
    *,
    key: str = "gears_attention",
    k_true: int = 10,
    cmap: str = "viridis",
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | None = None,
):
    """Overlay query cells' attention (from :func:`gearsx.tl.attention`) on the layout.

    Each panel shows one query (star) and every other cell of its miniset coloured by the
    query's attention weight; when true positions are known (``truth_key`` of the
    computation: ``'spatial'`` on ST, ``'spatial_gt'`` on simulated SC), the query's
    ``k_true`` true spatial neighbours are ringed and the title reports their recall among the
    ``k_true`` most attended cells. On ``obsm['spatial']`` the y axis points down, as
    :func:`scanpy.pl.spatial` and :func:`gearsx.pl.domains` draw tissue coordinates; on a layout,
    such as ``'X_gears_spatial'``, up, as in :func:`gearsx.pl.reconstruction`.

    Parameters
    ----------
    adata
        The data :func:`gearsx.tl.attention` ran on.
    model
        Not accepted (a plot never runs a model); kept so that old calls fail with a clear message.
    key
        ``uns`` key written by :func:`gearsx.tl.attention`.
    k_true
        True neighbours marked and used for the recall: at least 1, and fewer than ``m - 1`` for a
        miniset of ``m`` cells.
    cmap
        Colour map of the weights.
    ax
        One axes per query (default: a new figure).
    show, save
        As in :func:`gearsx.pl.reconstruction`.

    Returns
    -------
    A ``list`` of axes (one per query), unless shown.

    Examples
    --------
    >>> gx.tl.attention(adata_st, geo, recycle=-1)  # doctest: +SKIP
    >>> gx.pl.attention(adata_st)  # doctest: +SKIP
    """
    _no_model(model, "attention")
    k_true = check_positive_int(k_true, name="k_true")
    entry = _stored(adata, key, "attention", ("members", "queries", "weights", "params"))
    params = entry["params"]
    members, queries = np.asarray(entry["members"]), np.asarray(entry["queries"])
    if k_true >= len(members) - 1:
        msg = (
            f"`k_true`={k_true} must be smaller than {len(members) - 1}, one less than the other cells of the "
            f"{len(members)}-cell miniset: with every other cell a neighbour the recall is 1 whatever the attention."
        )
        raise ValueError(msg)
    weights = np.asarray(entry["weights"], dtype=float)
    xy = obsm_coords(adata, params["basis"], "the layout")
    truth_key = params.get("truth_key")
    truth = obsm_coords(adata, truth_key, "true positions") if truth_key is not None else None
    fig, axes = _axes(ax, len(queries), figsize=(4.6 * len(queries), 4.4))
    pos = {int(c): i for i, c in enumerate(members)}
    sub = xy[members]
    for a, q, w_row in zip(axes, queries, weights, strict=True):
        qi = pos[int(q)]
        w = w_row.copy()
        w[qi] = np.nan
        order = np.argsort(np.nan_to_num(w, nan=-1))
        sc_ = a.scatter(sub[order, 0], sub[order, 1], c=w[order], cmap=cmap, s=14, linewidths=0)
        a.scatter(*sub[qi], marker="*", s=220, c="red", edgecolors="k", linewidths=0.6, zorder=3, label="query")
        title = f"{adata.obs_names[q]} (recycle {params['recycle']})"
        if truth is not None:
            tq = truth[members]
            nearest = tree_knn(cKDTree(tq), tq[[qi]], k_true + 1)[1][0]  # ties by index
            true_nb = nearest[nearest != qi][:k_true]
            a.scatter(
                sub[true_nb, 0], sub[true_nb, 1], s=60, facecolors="none", edgecolors="red", linewidths=0.8,
                label=f"{len(true_nb)} true neighbours",
            )  # fmt: skip
            top = np.argsort(-np.nan_to_num(w, nan=-1))[: len(true_nb)]
            title += f"\nrecall@{len(true_nb)} {np.isin(top, true_nb).mean():.2f}"
        a.set_title(title, fontsize=9)
        a.set_aspect("equal")
        if params["basis"] == Key.spatial:
            y_down(a)  # tissue coordinates
        a.set_xticks([])
        a.set_yticks([])
        a.figure.colorbar(sc_, ax=a, shrink=0.7, label="attention")
    axes[0].legend(loc="lower left", fontsize=7, frameon=False)
    return _finish(fig, axes, show=show, save=save)


@checks_flags
def attention_summary(
    adata: AnnData,
    model: object | None = None,
    *,
    key: str = "gears_attention_summary",
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | None = None,
):
    """Attention recall@k and entropy per recycle (mean ± std over minisets), from :func:`gearsx.tl.attention_summary`.

    Parameters
    ----------
    adata
        The data :func:`gearsx.tl.attention_summary` ran on.
    model
        Not accepted (a plot never runs a model); kept so that old calls fail with a clear message.
    key
        ``uns`` key written by :func:`gearsx.tl.attention_summary`.
    ax
        Two axes (recall, entropy); default: a new figure.
    show, save
        As in :func:`gearsx.pl.reconstruction`.

    Returns
    -------
    A ``list`` of the two axes, unless shown.

    Examples
    --------
    >>> gx.tl.attention_summary(adata_st, geo)  # doctest: +SKIP
    >>> gx.pl.attention_summary(adata_st)  # doctest: +SKIP
    """
    _no_model(model, "attention_summary")
    entry = _stored(adata, key, "attention_summary", ("table", "params"))
    table = entry["table"]
    k = entry["params"]["k"]
    fig, axes = _axes(ax, 2, figsize=(9, 3.6))
    for path, grp in table.groupby("path", sort=False):
        stats = grp.groupby("recycle")[["recall", "entropy"]].agg(["mean", "std"])
        for a, col in zip(axes, ("recall", "entropy"), strict=True):
            m, sd = stats[(col, "mean")], stats[(col, "std")].fillna(0)
            a.errorbar(stats.index + 1, m, yerr=sd, marker="o", capsize=3, label=path)
    axes[0].set_ylabel(f"attention recall@{k} of true neighbours")
    axes[1].set_ylabel("attention entropy (nats)")
    for a in axes:
        a.set_xlabel("recycle")
        a.legend(frameon=False)
    return _finish(fig, axes, show=show, save=save)
