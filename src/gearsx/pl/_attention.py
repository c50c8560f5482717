"""Attention of the structure module (``GEARS(structure='ipa')``) over the tissue layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from gearsx._keys import Key

from ._reconstruction import _check_basis, _finish

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["attention", "attention_summary"]


def _default_basis(adata: AnnData, basis: str | None) -> str:
    if basis is not None:
        return basis
    for key in (Key.spatial, Key.reconstruction):
        if key in adata.obsm:
            return key
    msg = f"No layout to draw on: `adata.obsm` has neither 'spatial' nor 'X_gears_spatial' ({list(adata.obsm)}); pass `basis`."
    raise KeyError(msg)


def _default_truth(adata: AnnData, truth_key: str | None, basis: str) -> str | None:
    if truth_key is not None:
        return truth_key
    if basis == Key.spatial:
        return Key.spatial
    return Key.spatial_gt if Key.spatial_gt in adata.obsm else None


def _query_positions(adata: AnnData, query_cells) -> np.ndarray:
    out = []
    for q in query_cells:
        if isinstance(q, str):
            if q not in adata.obs_names:
                msg = f"query cell {q!r} is not in `adata.obs_names`."
                raise KeyError(msg)
            out.append(adata.obs_names.get_loc(q))
        else:
            q = int(q)
            if not 0 <= q < adata.n_obs:
                msg = f"query position {q} is outside [0, {adata.n_obs})."
                raise IndexError(msg)
            out.append(q)
    return np.asarray(out, dtype=np.int64)


def attention(
    adata: AnnData,
    model,
    *,
    query_cells: Sequence[str | int] | None = None,
    n_query: int = 3,
    recycle: int = -1,
    head: int | None = None,
    basis: str | None = None,
    truth_key: str | None = None,
    n_cells: int = 256,
    k_true: int = 10,
    oracle: bool = False,
    cmap: str = "viridis",
    show: bool | None = None,
    save: str | None = None,
):
    """Overlay query cells' attention of the structure module on the layout.

    A miniset of the ``n_cells`` cells nearest (in ``basis``) to the first query is run through
    the model's structure module; each panel shows one query (star), every other cell of the
    miniset coloured by the query's attention weight (mean over heads unless ``head``), and,
    when true positions are known (``truth_key``: ``'spatial'`` on ST, ``'spatial_gt'`` on
    simulated SC), the query's ``k_true`` true spatial neighbours ringed. The title reports the
    recall of those neighbours among the ``k_true`` most attended cells.

    Queries default to ``n_query`` deterministic cells: the cell nearest the layout's centre,
    then farthest-point picks among the inner half of its miniset.

    Parameters
    ----------
    adata
        ST (ground-truth layout) or SC cells (reconstructed layout) with embeddings.
    model
        A trained :class:`gearsx.model.GEARS` with ``structure='ipa'``.
    query_cells
        ``obs_names`` or integer positions of the queries.
    n_query
        Number of default queries.
    recycle
        Recycle to show (0-based; ``-1``: the last).
    head
        Attention head (``None``: mean over heads).
    basis
        ``obsm`` key of the layout (default ``'spatial'``, else ``'X_gears_spatial'``).
    truth_key
        ``obsm`` key of true positions for the neighbour rings (``None``: see above).
    n_cells
        Miniset size.
    k_true
        True neighbours marked and used for the recall.
    oracle
        Show the oracle path (true spatial edges, gate off) instead of the inference path;
        needs ``truth_key``.
    cmap
        Colour map of the weights.
    show, save
        As in :func:`gearsx.pl.reconstruction`.

    Returns
    -------
    List of axes (one per query) unless shown.

    Examples
    --------
    >>> geo = gx.model.GEARS(st, slide_key="slide", structure="ipa")  # doctest: +SKIP
    >>> geo.train()  # doctest: +SKIP
    >>> gx.pl.attention(st, geo, recycle=-1)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    basis = _default_basis(adata, basis)
    xy = _check_basis(adata, basis, "the layout")
    truth_key = _default_truth(adata, truth_key, basis)
    truth = _check_basis(adata, truth_key, "true positions") if truth_key is not None else None
    if oracle and truth is None:
        msg = "`oracle=True` needs true positions (`truth_key`) to build the true spatial edges."
        raise ValueError(msg)
    n_cells = min(int(n_cells), adata.n_obs)
    tree = cKDTree(xy)
    if query_cells is None:
        centre = int(tree.query(xy.mean(0))[1])
        members = np.sort(tree.query(xy[centre], k=n_cells)[1])
        inner = members[np.argsort(np.linalg.norm(xy[members] - xy[centre], axis=1))[: max(n_cells // 2, 1)]]
        from gearsx.geometry import farthest_point_sampling

        picks = [centre]
        if n_query > 1:
            far = farthest_point_sampling(xy[inner], min(n_query + 1, len(inner)), random_state=0)
            picks += [int(inner[i]) for i in far if int(inner[i]) != centre][: n_query - 1]
        queries = np.asarray(picks, dtype=np.int64)
    else:
        queries = _query_positions(adata, query_cells)
        members = np.sort(tree.query(xy[queries[0]], k=n_cells)[1])
        missing = np.setdiff1d(queries, members)
        if len(missing):
            msg = f"query cells {adata.obs_names[missing].tolist()} are not among the {n_cells} cells nearest the first query; raise `n_cells`."
            raise ValueError(msg)
    oracle_coords = truth[members] if oracle else None
    att = model.get_attention(adata, indices=members, recycle=recycle, oracle_coords=oracle_coords)
    weights = att["attention"]
    if head is not None:
        if not 0 <= head < weights.shape[0]:
            msg = f"`head` must be in [0, {weights.shape[0]}); got {head}."
            raise ValueError(msg)
        weights = weights[head]
    else:
        weights = weights.mean(0)
    pos = {int(c): i for i, c in enumerate(members)}
    fig, axes = plt.subplots(1, len(queries), figsize=(4.6 * len(queries), 4.4), constrained_layout=True, squeeze=False)
    axes = list(axes[0])
    sub = xy[members]
    for ax, q in zip(axes, queries, strict=True):
        qi = pos[int(q)]
        w = weights[qi].copy()
        w[qi] = np.nan
        order = np.argsort(np.nan_to_num(w, nan=-1))
        sc_ = ax.scatter(sub[order, 0], sub[order, 1], c=w[order], cmap=cmap, s=14, linewidths=0)
        ax.scatter(*sub[qi], marker="*", s=220, c="red", edgecolors="k", linewidths=0.6, zorder=3, label="query")
        title = f"{adata.obs_names[q]} (recycle {recycle})"
        if truth is not None:
            tq = truth[members]
            true_nb = cKDTree(tq).query(tq[qi], k=min(k_true + 1, len(members)))[1][1:]
            ax.scatter(
                sub[true_nb, 0], sub[true_nb, 1], s=60, facecolors="none", edgecolors="red", linewidths=0.8,
                label=f"{len(true_nb)} true neighbours",
            )  # fmt: skip
            top = np.argsort(-np.nan_to_num(w, nan=-1))[: len(true_nb)]
            title += f"\nrecall@{len(true_nb)} {np.isin(top, true_nb).mean():.2f}"
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(sc_, ax=ax, shrink=0.7, label="attention")
    axes[0].legend(loc="lower left", fontsize=7, frameon=False)
    return _finish(fig, axes, show=show, save=save)


def attention_summary(
    adata: AnnData,
    model,
    *,
    n_sets: int = 20,
    n_cells: int = 256,
    k: int = 10,
    truth_key: str = Key.spatial,
    oracle: bool = True,
    random_state: int = 0,
    show: bool | None = None,
    save: str | None = None,
):
    """Attention recall@k of true neighbours and attention entropy per recycle (mean ± std over minisets).

    Minisets are the ``n_cells`` cells nearest to ``n_sets`` centres chosen by farthest-point
    sampling of ``obsm[truth_key]``; scores come from :func:`gearsx.metrics.attention_recall` on
    the head-averaged attention. With ``oracle=True`` the oracle path (true spatial edges, gate
    off) is drawn beside the inference path.

    Parameters
    ----------
    adata
        Data with true positions (ST).
    model
        A trained :class:`gearsx.model.GEARS` with ``structure='ipa'``.
    n_sets, n_cells
        Number and size of the minisets.
    k
        Neighbours for the recall.
    truth_key
        ``obsm`` key of the true positions.
    oracle
        Also evaluate the oracle path.
    random_state
        Seed of the first centre.
    show, save
        As in :func:`gearsx.pl.reconstruction`.

    Returns
    -------
    ``(axes, table)``: the two axes and a :class:`pandas.DataFrame` with one row per path,
    recycle and miniset, unless shown (then only the table).
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    from gearsx.geometry import farthest_point_sampling
    from gearsx.metrics import attention_recall

    truth = _check_basis(adata, truth_key, "true positions")
    n_cells = min(int(n_cells), adata.n_obs)
    tree = cKDTree(truth)
    centres = farthest_point_sampling(truth, min(int(n_sets), adata.n_obs), random_state=random_state)
    rows = []
    for s, c in enumerate(centres):
        members = np.sort(tree.query(truth[c], k=n_cells)[1])
        for path in ("inference", "oracle") if oracle else ("inference",):
            att = model.get_attention(
                adata, indices=members, oracle_coords=truth[members] if path == "oracle" else None
            )["attention"]
            sc = attention_recall(att.mean(1), truth[members], k=k)
            for r in range(att.shape[0]):
                rows.append(
                    {"path": path, "recycle": r, "set": s, "recall": sc["recall"][r], "entropy": sc["entropy"][r]}
                )
    table = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for path, grp in table.groupby("path", sort=False):
        stats = grp.groupby("recycle")[["recall", "entropy"]].agg(["mean", "std"])
        for ax, col in zip(axes, ("recall", "entropy"), strict=True):
            m, sd = stats[(col, "mean")], stats[(col, "std")].fillna(0)
            ax.errorbar(stats.index + 1, m, yerr=sd, marker="o", capsize=3, label=path)
    axes[0].set_ylabel(f"attention recall@{k} of true neighbours")
    axes[1].set_ylabel("attention entropy (nats)")
    for ax in axes:
        ax.set_xlabel("recycle")
        ax.legend(frameon=False)
    out = _finish(fig, list(axes), show=show, save=save)
    return table if out is None else (out, table)
