"""Locality graph of cells in embedding space for the patch cover (see :ref:`gears-reconstruction`), and neighbour averaging."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from gearsx._utils import check_coords, check_fraction, check_positive_int

from ._knn import group_knn, knn, knn_matrix

__all__ = ["locality_graph", "neighbor_average", "spatial_edges"]


def _check_rows(x, k) -> tuple[np.ndarray, int]:
    """``x`` as a float32 2-D array with more than ``k`` rows, and ``k`` as a positive int (else ``ValueError``)."""
    x = np.asarray(x, dtype=np.float32)
    k = check_positive_int(k, name="k")
    if x.ndim != 2 or k >= len(x):
        msg = f"`x` must be a 2-D array with more than k={k} rows; got shape {x.shape}."
        raise ValueError(msg)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        msg = f"`x` contains NaN or inf in {int((~finite).sum())} of {len(x)} rows; remove or impute those rows first."
        raise ValueError(msg)
    return x, k


def check_jaccard(jaccard) -> float:
    """``jaccard`` as a float in ``[0, 1)`` (else ``ValueError``): a Jaccard index is at most 1, so 1 would prune every edge."""
    jaccard = check_fraction(jaccard, name="jaccard")
    if jaccard >= 1.0:
        msg = (
            "`jaccard`=1 prunes every edge (a neighbour-set Jaccard index is at most 1, and edges at or below "
            "`jaccard` are pruned); pass a value in [0, 1), e.g. the default 0.1."
        )
        raise ValueError(msg)
    return jaccard


def locality_graph(x: np.ndarray, *, k: int = 15, jaccard: float = 0.1, random_state: int = 0):
    """Mutual-kNN graph of embeddings, pruned by neighbour-set Jaccard, with unreachable cells re-attached.

    An edge ``i - j`` is kept when ``i`` and ``j`` are in each other's ``k`` nearest
    neighbours and the Jaccard index of their neighbour sets (each including the cell
    itself) exceeds ``jaccard``. Cells left without an edge are attached to their
    nearest neighbour, and the connected components are joined into one: by the
    shortest kNN edges between components that form a minimum spanning tree of them,
    then any group that no kNN edge reaches by its cell nearest to the largest
    component. So no cell is dropped and the patch cover reaches every cell.

    Parameters
    ----------
    x
        Embeddings ``(n, h)``.
    k
        Neighbours per cell (exact search up to 50,000 cells, pynndescent above).
    jaccard
        Edges whose neighbour-set Jaccard index is at or below this are pruned (in ``[0, 1)``).
    random_state
        Seed of the approximate search.

    Returns
    -------
    The symmetric CSR adjacency ``(n, n)`` and a dict of diagnostics (edge counts,
    re-attached cells, components before and after linking).

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import locality_graph
    >>> g, info = locality_graph(np.random.default_rng(0).normal(size=(500, 8)), k=10)
    >>> info["n_components"]
    1
    """
    from scipy.sparse.csgraph import connected_components

    x, k = _check_rows(x, k)
    jaccard = check_jaccard(jaccard)
    n = len(x)
    idx, dist = knn(x, k, random_state=random_state)
    rows = np.repeat(np.arange(n), k)
    a = sp.csr_matrix((np.ones(n * k), (rows, idx.ravel())), shape=(n, n))
    mutual = a.multiply(a.T).tocsr()
    s = a + sp.identity(n, format="csr")
    inter = (s @ s.T).multiply(mutual).tocsr()  # shared neighbours on mutual edges
    inter.data = inter.data / (2 * (k + 1) - inter.data)
    inter.data[inter.data <= jaccard] = 0
    inter.eliminate_zeros()
    g = (inter > 0).astype(np.float64).tocsr()
    n_mutual = mutual.nnz // 2
    isolated = np.flatnonzero(np.diff(g.indptr) == 0)
    extra_i, extra_j = list(isolated), list(idx[isolated, 0])
    if extra_i:
        g = g + sp.csr_matrix((np.ones(2 * len(extra_i)), (extra_i + extra_j, extra_j + extra_i)), shape=(n, n))
    n_comp_before, comp = connected_components(g, directed=False)
    links_i, links_j = _component_links(x, comp, rows, idx.ravel(), dist.ravel())
    n_linked = len(links_i)
    if n_linked:
        g = g + sp.csr_matrix((np.ones(2 * n_linked), (links_i + links_j, links_j + links_i)), shape=(n, n))
    g.data[:] = 1.0
    n_comp, _ = connected_components(g, directed=False)
    diag = {
        "k": k,
        "jaccard": jaccard,
        "n_mutual_edges": int(n_mutual),
        "n_edges": int(g.nnz // 2),
        "n_isolated_reattached": len(isolated),
        "n_components_before_linking": int(n_comp_before),
        "n_components_linked": int(n_linked),
        "n_components": int(n_comp),
    }
    return g.tocsr(), diag


def _component_links(x, comp, src, dst, dist) -> tuple[list[int], list[int]]:
    """Cell pairs that join the components ``comp`` into one connected graph.

    The kNN edges ``src -> dst`` (lengths ``dist``) that cross components give a graph of
    components weighted by their shortest crossing edge; its minimum spanning forest links
    components by those edges. Linking each component by its own shortest crossing edge is not
    enough: two small components that are each other's nearest would link only to each other.
    Groups the forest leaves apart (no kNN edge reaches them) are then linked by their cell
    nearest to the largest component.
    """
    from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

    n_comp = int(comp.max()) + 1
    if n_comp == 1:
        return [], []
    cross = comp[src] != comp[dst]
    ci, cj, cd = src[cross], dst[cross], dist[cross]
    order = np.lexsort((cj, ci, cd))  # shortest first (ties by cell), so the first of a pair is its shortest
    a, b = np.minimum(comp[ci], comp[cj])[order], np.maximum(comp[ci], comp[cj])[order]
    _, first = np.unique(a * n_comp + b, return_index=True)
    pick = order[first]
    # minimum_spanning_tree drops zero weights: shift the lengths (only their order matters)
    w = sp.csr_matrix((cd[pick] + 1.0, (comp[ci[pick]], comp[cj[pick]])), shape=(n_comp, n_comp))
    tree = minimum_spanning_tree(w + w.T).tocoo()
    pair_of = {
        (int(min(u, v)), int(max(u, v))): k for k, u, v in zip(pick, comp[ci[pick]], comp[cj[pick]], strict=True)
    }
    links_i, links_j = [], []
    for u, v in zip(tree.row, tree.col, strict=True):
        k = pair_of[(int(min(u, v)), int(max(u, v)))]
        links_i.append(int(ci[k]))
        links_j.append(int(cj[k]))
    n_groups, group = connected_components(tree + tree.T, directed=False)
    if n_groups > 1:
        from sklearn.neighbors import NearestNeighbors

        main = group[np.bincount(comp).argmax()]
        big = np.flatnonzero(group[comp] == main)
        nn = NearestNeighbors(n_neighbors=1).fit(x[big])
        for h in range(n_groups):
            if h == main:
                continue
            members = np.flatnonzero(group[comp] == h)
            d, j = nn.kneighbors(x[members])
            best = int(np.argmin(d[:, 0]))
            links_i.append(int(members[best]))
            links_j.append(int(big[j[best, 0]]))
    return links_i, links_j


def neighbor_average(x: np.ndarray, k: int, *, random_state: int = 0) -> np.ndarray:
    """Average every row of ``x`` with its ``k - 1`` nearest neighbours (Euclidean, in ``x`` itself).

    Used by :func:`gearsx.tl.reconstruct` to bring single-cell embeddings closer to the
    inputs the geometry model was trained on: ST spots average several cells, so a spot's
    embedding is a smoothed, less cell-type-dominated signal than a single cell's. A
    ``k``-nearest-neighbour mean in embedding space is the simplest such denoiser: one step
    of a uniform random walk on the kNN graph (MAGIC repeats such steps with an adaptive
    kernel). It is written here as one sparse product, so no ``(n, k, h)`` array is built;
    no library offers it on an arbitrary embedding without also building a full scanpy
    neighbour graph.

    Parameters
    ----------
    x
        Embeddings ``(n, h)``.
    k
        Rows averaged per output row, the row itself included (``1`` returns a copy);
        must be smaller than ``n``. Exact search up to 50,000 rows, pynndescent above.
    random_state
        Seed of the approximate search.

    Returns
    -------
    The averaged embeddings, ``(n, h)`` float32.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import neighbor_average
    >>> x = np.r_[np.zeros((5, 2)), np.ones((5, 2))]
    >>> neighbor_average(x, 5)[[0, 9]]
    array([[0., 0.],
           [1., 1.]], dtype=float32)
    """
    x, k = _check_rows(x, k)
    if k == 1:
        return x.copy()
    n = len(x)
    idx, _ = knn(x, k - 1, random_state=random_state)
    w = knn_matrix(np.c_[np.arange(n), idx], np.full((n, k), 1.0 / k, dtype=np.float32))  # itself and its neighbours
    return np.asarray(w @ x, dtype=np.float32)


def spatial_edges(coords: np.ndarray, n_neighbors: int = 6, *, groups: np.ndarray | None = None) -> tuple:
    """Edge list ``src -> dst`` of the spatial kNN graph within each group, with a self-loop on every node.

    Every node receives edges from its ``n_neighbors`` nearest points of its own group (slide)
    and from itself, so the graph never links two slides. ``n_neighbors=6`` is the first ring of
    a Visium hexagonal grid.

    Parameters
    ----------
    coords
        ``(n, d)`` coordinates.
    n_neighbors
        Neighbours of each node.
    groups
        Group (slide) of each node, or ``None`` for one group.

    Returns
    -------
    ``(src, dst)``, two int64 arrays of length ``n * (n_neighbors + 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import spatial_edges
    >>> src, dst = spatial_edges(np.random.default_rng(0).normal(size=(50, 2)), n_neighbors=4)
    >>> len(src), int(np.bincount(dst).min())
    (250, 5)
    """
    coords = check_coords(coords, name="coords")
    n_neighbors = check_positive_int(n_neighbors, name="n_neighbors")
    n = len(coords)
    src, dst = [np.arange(n)], [np.arange(n)]
    for rows, nbr in group_knn(coords, groups, n_neighbors, name="n_neighbors"):
        src.append(nbr.ravel())
        dst.append(np.repeat(rows, n_neighbors))
    return np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64)
