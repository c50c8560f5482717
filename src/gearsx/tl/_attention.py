"""``gx.tl.attention`` and ``gx.tl.attention_summary``: run the structure module's attention, store it in ``uns``."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from gearsx._anndata import check_key_added, obsm_coords, write_record
from gearsx._keys import Key
from gearsx._utils import check_positive_int, checks_flags
from gearsx.geometry._knn import tree_knn

if TYPE_CHECKING:
    from anndata import AnnData

    from gearsx.model import GEARS

__all__ = ["attention", "attention_summary"]


def _default_basis(adata: AnnData, basis: str | None) -> str:
    """``basis``, else ``'spatial'`` or ``'X_gears_spatial'``, whichever ``adata`` has."""
    if basis is not None:
        return basis
    for key in (Key.spatial, Key.reconstruction):
        if key in adata.obsm:
            return key
    msg = f"No layout to draw on: `adata.obsm` has neither 'spatial' nor 'X_gears_spatial' ({list(adata.obsm)}); pass `basis`."
    raise KeyError(msg)


def _default_truth(adata: AnnData, truth_key: str | None, basis: str) -> str | None:
    """``truth_key``, else the true positions that go with ``basis`` when ``adata`` has them."""
    if truth_key is not None:
        return truth_key
    if basis == Key.spatial:
        return Key.spatial
    return Key.spatial_gt if Key.spatial_gt in adata.obsm else None


def _query_positions(adata: AnnData, query_cells) -> np.ndarray:
    """Positions of ``query_cells`` (names or integer positions; one name or position alone is one query)."""
    if isinstance(query_cells, str | numbers.Integral):  # a bare name would be iterated letter by letter
        query_cells = [query_cells]
    out = []
    for q in query_cells:
        if isinstance(q, str):
            if q not in adata.obs_names:
                msg = f"query cell {q!r} is not in `adata.obs_names`."
                raise KeyError(msg)
            where = adata.obs_names.get_loc(q)
            if not isinstance(where, numbers.Integral):  # a slice or mask: the name is not unique
                msg = (
                    f"query cell {q!r} names several cells of `adata.obs_names`; run `adata.obs_names_make_unique()` "
                    "or pass integer positions."
                )
                raise ValueError(msg)
            out.append(where)
        else:
            if isinstance(q, bool | np.bool_) or not isinstance(q, numbers.Integral):  # int() truncated 2.7 to 2
                msg = f"query cell {q!r} is neither an `obs_names` entry nor an integer position."
                raise TypeError(msg)
            q = int(q)
            if not 0 <= q < adata.n_obs:
                msg = f"query position {q} is outside [0, {adata.n_obs})."
                raise IndexError(msg)
            out.append(q)
    if not out:
        msg = "`query_cells` is empty; pass at least one cell, or None for the default queries."
        raise ValueError(msg)
    values, counts = np.unique(out, return_counts=True)
    if (counts > 1).any():
        msg = f"`query_cells` lists {adata.obs_names[values[counts > 1]].tolist()} more than once; pass each cell once."
        raise ValueError(msg)
    return np.asarray(out, dtype=np.int64)


def _check_ipa(model) -> None:
    from gearsx.model import GEARS

    if not isinstance(model, GEARS) or model.structure != "ipa":
        msg = "`model` must be a trained gx.model.GEARS built with structure='ipa' (the refiner has no attention)."
        raise TypeError(msg)


@checks_flags
def attention(
    adata: AnnData,
    model: GEARS,
    *,
    query_cells: Sequence[str | int] | None = None,
    n_query: int = 3,
    recycle: int = -1,
    head: int | None = None,
    basis: str | None = None,
    truth_key: str | None = None,
    n_cells: int = 256,
    oracle: bool = False,
    key_added: str = "gears_attention",
) -> None:
    """Attention of query cells over a miniset, from the structure module (``GEARS(structure='ipa')``).

    A miniset of the ``n_cells`` cells nearest (in ``basis``) to the first query is run through
    the model's structure module, and each query's attention weights over the miniset (mean over
    heads unless ``head``) are stored for :func:`gearsx.pl.attention`. Queries default to
    ``n_query`` deterministic cells: the cell nearest the layout's centre, then farthest-point
    picks among the inner half of its miniset.

    Parameters
    ----------
    adata
        ST (ground-truth layout) or SC cells (reconstructed layout) with embeddings.
    model
        A trained :class:`gearsx.model.GEARS` with ``structure='ipa'``.
    query_cells
        ``obs_names`` or integer positions of the queries, each once (one name or position alone
        is one query).
    n_query
        Number of default queries: at most the cells of the miniset's inner half (the
        ``n_cells // 2`` nearest the centre); the queries used are in ``uns[key_added]['queries']``.
    recycle
        Recycle to keep (0-based; ``-1``: the last).
    head
        Attention head (``None``: mean over heads).
    basis
        ``obsm`` key of the layout that defines the miniset (default ``'spatial'``, else
        ``'X_gears_spatial'``).
    truth_key
        ``obsm`` key of true positions (needed for ``oracle``; default as for ``basis``);
        :func:`gearsx.pl.attention` rings each query's true neighbours from it.
    n_cells
        Miniset size (all the cells when ``adata`` has fewer; the size used is in ``params``).
    oracle
        Run the oracle path (true spatial edges, gate off) instead of the inference path.
    key_added
        ``uns`` key of the result.

    Returns
    -------
    ``None``; writes ``uns[key_added]`` with ``members`` (positions of the miniset),
    ``queries`` (positions), ``weights`` (``(n_queries, n_cells)``), and ``params``.

    Examples
    --------
    >>> gx.tl.attention(adata_st, geo, recycle=-1)  # doctest: +SKIP
    >>> gx.pl.attention(adata_st)  # doctest: +SKIP
    """
    check_key_added(key_added)
    _check_ipa(model)
    basis = _default_basis(adata, basis)
    xy = obsm_coords(adata, basis, "the layout")
    truth_key = _default_truth(adata, truth_key, basis)
    if oracle and truth_key is None:
        msg = "`oracle=True` needs true positions (`truth_key`) to build the true spatial edges."
        raise ValueError(msg)
    truth = obsm_coords(adata, truth_key, "true positions") if truth_key is not None else None  # read by the plot
    n_query = check_positive_int(n_query, name="n_query")
    if head is not None:
        head = check_positive_int(head, name="head", minimum=0)
    n_cells = min(check_positive_int(n_cells, name="n_cells", minimum=3), adata.n_obs)
    tree = cKDTree(xy)
    if query_cells is None:
        from gearsx.geometry import farthest_point_sampling

        centre = int(tree_knn(tree, xy.mean(0)[None], 1)[1][0, 0])
        nearest = tree_knn(tree, xy[[centre]], n_cells)[1][0]  # by distance, ties by index
        members, inner = np.sort(nearest), nearest[: max(n_cells // 2, 1)]
        picks = [centre]
        if n_query > 1:
            far = farthest_point_sampling(xy[inner], min(n_query + 1, len(inner)), random_state=0)
            picks += [int(inner[i]) for i in far if int(inner[i]) != centre][: n_query - 1]
        queries = np.asarray(picks, dtype=np.int64)
    else:
        queries = _query_positions(adata, query_cells)
        members = np.sort(tree_knn(tree, xy[queries[:1]], n_cells)[1][0])
        missing = np.setdiff1d(queries, members)
        if len(missing):
            msg = (
                f"query cells {adata.obs_names[missing].tolist()} are not among the {n_cells} cells nearest the "
                "first query; raise `n_cells`."
            )
            raise ValueError(msg)
    att = model.get_attention(adata, indices=members, recycle=recycle, oracle_coords=truth[members] if oracle else None)
    weights = att["attention"]
    if head is not None:
        if not 0 <= head < weights.shape[0]:
            msg = f"`head` must be in [0, {weights.shape[0]}); got {head}."
            raise ValueError(msg)
        weights = weights[head]
    else:
        weights = weights.mean(0)
    pos = np.searchsorted(members, queries)
    params = {"recycle": recycle, "basis": basis, "n_cells": n_cells, "oracle": oracle, "head": head}
    write_record(
        adata,
        key_added,
        {**params, "truth_key": truth_key},
        members=members.astype(np.int64),
        queries=queries,
        weights=np.asarray(weights[pos], dtype=np.float32),
    )


@checks_flags
def attention_summary(
    adata: AnnData,
    model: GEARS,
    *,
    n_sets: int = 20,
    n_cells: int = 256,
    k: int = 10,
    truth_key: str = Key.spatial,
    oracle: bool = True,
    random_state: int = 0,
    key_added: str = "gears_attention_summary",
) -> pd.DataFrame:
    """Attention recall@k of true neighbours and attention entropy per recycle, over many minisets.

    Minisets are the ``n_cells`` cells nearest to ``n_sets`` centres chosen by farthest-point
    sampling of ``obsm[truth_key]``; scores come from :func:`gearsx.metrics.attention_recall` on
    the head-averaged attention. With ``oracle=True`` the oracle path (true spatial edges, gate
    off) is scored beside the inference path. Plot with :func:`gearsx.pl.attention_summary`.

    Parameters
    ----------
    adata
        Data with true positions (ST).
    model
        A trained :class:`gearsx.model.GEARS` with ``structure='ipa'``.
    n_sets, n_cells
        Number and size of the minisets.
    k
        Neighbours for the recall; smaller than ``n_cells - 1``.
    truth_key
        ``obsm`` key of the true positions.
    oracle
        Also evaluate the oracle path.
    random_state
        Seed of the first centre.
    key_added
        ``uns`` key of the result.

    Returns
    -------
    The table (one row per path, recycle and miniset: ``recall``, ``entropy``), also written to
    ``uns[key_added]['table']`` with the ``params``.

    Examples
    --------
    >>> gx.tl.attention_summary(adata_st, geo)  # doctest: +SKIP
    >>> gx.pl.attention_summary(adata_st)  # doctest: +SKIP
    """
    random_state = check_positive_int(random_state, name="random_state", minimum=0)
    from gearsx.geometry import farthest_point_sampling
    from gearsx.metrics import attention_recall

    check_key_added(key_added)
    _check_ipa(model)
    truth = obsm_coords(adata, truth_key, "true positions")
    n_sets = check_positive_int(n_sets, name="n_sets")
    n_cells = min(check_positive_int(n_cells, name="n_cells", minimum=3), adata.n_obs)
    k = check_positive_int(k, name="k")
    if k >= n_cells - 1:
        msg = (
            f"`k`={k} must be smaller than n_cells - 1 = {n_cells - 1} (cells per miniset, at most the data's "
            f"{adata.n_obs}): with every other cell a neighbour the recall is 1 whatever the attention."
        )
        raise ValueError(msg)
    tree = cKDTree(truth)
    centres = farthest_point_sampling(truth, min(int(n_sets), adata.n_obs), random_state=random_state)
    rows = []
    for s, c in enumerate(centres):
        members = np.sort(tree_knn(tree, truth[[c]], n_cells)[1][0])
        for path in ("inference", "oracle") if oracle else ("inference",):
            coords = truth[members] if path == "oracle" else None
            att = model.get_attention(adata, indices=members, oracle_coords=coords)["attention"]
            sc = attention_recall(att.mean(1), truth[members], k=k)
            rows += [
                {"path": path, "recycle": r, "set": s, "recall": sc["recall"][r], "entropy": sc["entropy"][r]}
                for r in range(att.shape[0])
            ]
    table = pd.DataFrame(rows)
    params = {"n_sets": int(n_sets), "n_cells": n_cells, "k": k, "truth_key": truth_key, "oracle": oracle}
    write_record(adata, key_added, {**params, "random_state": random_state}, table=table)
    return table
