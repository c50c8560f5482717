"""The patch cover of :func:`gearsx.tl.reconstruct`: overlapping patches grown by random walks (see :ref:`gears-reconstruction`).

Every cell is covered ``coverage`` times by patches of ``n_patch`` cells grown by random walks
on the locality graph, and every patch shares at least ``min_overlap`` cells with another one,
so that the stitch can relate all patches. Numpy and SciPy only.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from gearsx._utils import as_rng, check_coords, check_fraction, check_positions, check_positive_int, checks_flags

__all__ = ["best_overlaps", "random_walk_patches"]

logger = logging.getLogger(__name__)


@checks_flags
def random_walk_patches(
    adjacency: sp.spmatrix,
    patch_size: int,
    *,
    coverage: int = 2,
    restart: float = 0.1,
    revisit: float = 0.25,
    min_overlap: int = 0,
    max_patches: int | None = None,
    prune: bool = False,
    random_state: int = 0,
) -> list[np.ndarray]:
    """Cover a graph with overlapping patches grown by random walks.

    Each patch starts at a least-covered cell and grows by 32 simultaneous random
    walks that restart, with probability ``restart``, from a random cell already in
    the patch (so the patch grows as a compact blob and never stalls); cells join in
    order of first visit until the patch holds ``patch_size`` distinct cells (or its
    whole connected component). Patches are added until every
    cell is covered at least ``coverage`` times, so neighbouring patches overlap.

    Two corrections keep the cover close to the requested ``coverage`` instead of
    many times denser. A plain walk visits cells in proportion to their degree, so
    low-degree cells of a kNN graph are reached last and the final patches, each
    seeded at one of them, re-cover cells that already have enough patches (a
    coupon-collector tail: on the simulator's 10,000 cells the median cell ended up
    in 12 patches for ``coverage=2``). Steps are therefore Metropolis-Hastings moves
    (a proposed neighbour ``j`` of ``i`` is accepted with probability
    ``min(1, deg_i / deg_j)``, so visits are uniform over cells), and a step onto a
    cell that is already covered ``coverage`` times is taken only with probability
    ``revisit`` — patches stay connected random-walk blobs but grow towards the
    uncovered frontier (median coverage 6, half the patches, same accuracy).

    With ``min_overlap``, every patch is then guaranteed to share at least that many
    cells with another patch (the stitching needs shared cells to align patches):
    a patch below it swaps cells that other patches cover enough for cells of its
    best partner next to it in the graph, keeping its size and the coverage of
    every cell; when too few of its cells are covered elsewhere to swap, a bridging
    patch (its cells nearest the partner plus the partner's cells nearest it) is added.

    Parameters
    ----------
    adjacency
        Sparse symmetric adjacency (e.g. a kNN graph), ``(n, n)``.
    patch_size
        Cells per patch (smaller only for components with fewer cells).
    coverage
        Minimum number of patches covering each cell.
    restart
        Probability that a walker jumps back into the patch at each step (keeps patches compact).
    revisit
        Probability of stepping onto a cell already covered ``coverage`` times (1: unbiased walk).
    min_overlap
        Cells each patch must share with at least one other patch (0: no guarantee). Raises
        when it cannot be met (``min_overlap`` larger than the patch or its component allows).
    max_patches
        Safety limit on the number of patches (default ``10 * coverage * n / patch_size + 10``).
    prune
        Drop redundant patches afterwards: visiting patches from the most to the least
        redundant (mean coverage of their cells), a patch is dropped when every one of
        its cells stays covered ``coverage`` times without it. On graphs whose walks
        spread widely (embedding kNN graphs) the cover otherwise ends up several times
        denser than asked, which multiplies prediction and stitching time.
    random_state
        Seed.

    Returns
    -------
    A ``list`` of index arrays, one per patch.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from gearsx.geometry import random_walk_patches
    >>> chain = sp.diags([np.ones(99), np.ones(99)], [-1, 1], shape=(100, 100))  # 100 cells in a row
    >>> patches = random_walk_patches(chain, 20, coverage=2, random_state=0)
    >>> {len(p) for p in patches}, int(np.bincount(np.concatenate(patches), minlength=100).min())
    ({20}, 2)
    """
    a = sp.csr_matrix(adjacency)
    n = a.shape[0]
    patch_size = check_positive_int(patch_size, name="patch_size", minimum=2)
    coverage = check_positive_int(coverage, name="coverage")
    if a.shape[0] != a.shape[1]:
        msg = f"`adjacency` must be a square (n, n) graph; got shape {a.shape}."
        raise ValueError(msg)
    if not check_fraction(restart, name="restart") < 1:  # walkers that always jump back never reach a new cell
        msg = "`restart` must be below 1: at 1 every walker jumps back into the patch at each step, which never grows."
        raise ValueError(msg)
    check_fraction(revisit, name="revisit")
    if max_patches is not None:
        max_patches = check_positive_int(max_patches, name="max_patches")
    rng = as_rng(random_state)
    indptr, indices = a.indptr, a.indices
    deg = np.diff(indptr)
    count = np.zeros(n, dtype=np.int64)
    limit = max_patches or int(10 * coverage * n / patch_size) + 10
    _, comp = connected_components(a, directed=False)
    comp_size = np.bincount(comp)
    n_walkers = 32
    patches: list[np.ndarray] = []
    seeds = _LeastCovered(count)
    seen = np.zeros(n, dtype=bool)
    while len(patches) < limit:
        seed = seeds.draw(rng)
        if seeds.level >= coverage:  # the least-covered cells are covered enough (count.min() is O(n))
            break
        target = min(patch_size, int(comp_size[comp[seed]]))
        # Vectorised walkers: all step at once; cells join the patch in order of first visit.
        seen[seed] = True
        order = [np.array([seed])]
        n_seen = 1
        cur = np.full(n_walkers, seed)
        while n_seen < target:
            d = deg[cur]
            step = indices[indptr[cur] + (rng.random(n_walkers) * np.maximum(d, 1)).astype(np.int64) % np.maximum(d, 1)]
            members = np.concatenate(order)
            jump = members[rng.integers(len(members), size=n_walkers)]
            # Metropolis-Hastings (uniform visits), and only rarely onto cells that are covered enough
            accept = (rng.random(n_walkers) * deg[step] <= deg[cur]) & (
                (count[step] < coverage) | (rng.random(n_walkers) < revisit)
            )
            step = np.where(accept, step, cur)
            cur = np.where((rng.random(n_walkers) < restart) | (d == 0), jump, step)
            new = np.unique(cur[~seen[cur]])
            if len(new):
                new = rng.permutation(new)[: target - n_seen]
                seen[new] = True
                order.append(new)
                n_seen += len(new)
        idx = np.sort(np.concatenate(order))
        seen[idx] = False  # reset only what this patch touched (one O(n) array for all patches)
        count[idx] += 1
        patches.append(idx)
    if count.min() < coverage:
        msg = f"Patch cover stopped at max_patches={limit} with {int((count < coverage).sum())} cells under-covered."
        raise RuntimeError(msg)
    if prune:
        redundancy = np.array([count[p].mean() for p in patches])
        keep = np.ones(len(patches), dtype=bool)
        for i in np.argsort(-redundancy, kind="stable"):
            if count[patches[i]].min() > coverage:
                count[patches[i]] -= 1
                keep[i] = False
        patches = [p for p, k in zip(patches, keep, strict=True) if k]
    if min_overlap > 0 and len(patches) > 1:
        patches = _enforce_overlap(a, patches, min_overlap, coverage, rng)
    return patches


class _LeastCovered:
    """Draw a cell uniformly among the least-covered ones, in amortised ``O(1)`` per draw.

    Recomputing ``flatnonzero(count == count.min())`` for every patch costs ``O(n)`` each time, which
    made the cover quadratic (144 s of 1,000,000 cells went there). Counts only grow, so the
    candidates of the current level are kept and stale ones (covered since) are rejected when drawn;
    rejection sampling from a superset is uniform over the fresh ones. The list is compacted after
    a few rejections in a row, and rebuilt when the level is exhausted.
    """

    def __init__(self, count: np.ndarray) -> None:
        self.count = count
        self._rebuild()

    def _rebuild(self) -> None:
        self.level = int(self.count.min())
        self.cand = np.flatnonzero(self.count == self.level)

    def draw(self, rng: np.random.Generator) -> int:
        misses = 0
        while True:
            if len(self.cand) == 0:
                self._rebuild()
            cell = int(self.cand[rng.integers(len(self.cand))])
            if self.count[cell] == self.level:
                return cell
            misses += 1
            if misses >= 4:  # most candidates are stale: keep the fresh ones (O(len) once per halving)
                self.cand = self.cand[self.count[self.cand] == self.level]
                misses = 0


def patch_incidence(patches: list[np.ndarray], n: int) -> sp.csr_matrix:
    """Cells x patches matrix of ones: ``inc.T @ inc`` counts the cells every two patches share."""
    cols = np.repeat(np.arange(len(patches)), [len(p) for p in patches])
    return sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), (np.concatenate(patches), cols)), shape=(n, len(patches))
    )


def checked_patch(
    p: int, index, coords, n: int, *, min_points: int = 1, range_error: type[Exception] = IndexError
) -> tuple[np.ndarray, np.ndarray]:
    """Return patch ``p``'s cell positions and ``(len, 2)`` coordinates, validated against ``n`` cells.

    Positions must be distinct integers in ``[0, n)``, the coordinates finite with one row per
    position; errors name the patch.
    """
    idx = check_positions(index, n, name=f"Patch {p}", unique=True, range_error=range_error)
    xy = check_coords(coords, name=f"patch_coords[{p}]", min_points=min_points, n_dims=2)
    if len(idx) != len(xy):
        msg = f"Patch {p}: {len(idx)} indices for {len(xy)} coordinate rows; they must match."
        raise ValueError(msg)
    return idx, xy


def best_overlaps(patches: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each patch, the most cells it shares with another patch, and that partner (-1 for none).

    Parameters
    ----------
    patches
        One integer index array per patch (cells ``0`` to ``n - 1``).
    n
        Number of cells.

    Returns
    -------
    ``(shared, partner)``, one entry per patch: the largest number of cells it shares with another
    patch, and the index of that patch (``-1`` when it shares none).

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import best_overlaps
    >>> shared, partner = best_overlaps([np.array([0, 1, 2, 3]), np.array([2, 3, 4]), np.array([7, 8])], 9)
    >>> shared.tolist(), partner.tolist()
    ([2, 2, 0], [1, 0, -1])
    """
    patches = [check_positions(p, n, name=f"Patch {i}") for i, p in enumerate(patches)]
    if len(patches) < 2:
        return np.zeros(len(patches), dtype=np.int64), np.full(len(patches), -1)
    inc = patch_incidence(patches, n).T.tocsr()  # patches x cells
    shared = (inc @ inc.T).tocsr()
    shared.setdiag(0)
    shared.eliminate_zeros()
    best = np.zeros(len(patches), dtype=np.int64)
    partner = np.full(len(patches), -1)
    for i in range(len(patches)):
        row = slice(shared.indptr[i], shared.indptr[i + 1])
        if shared.indptr[i + 1] > shared.indptr[i]:
            j = int(np.argmax(shared.data[row]))
            best[i], partner[i] = int(shared.data[row][j]), int(shared.indices[row][j])
    return best, partner


def _enforce_overlap(a: sp.csr_matrix, patches, min_overlap: int, coverage: int, rng) -> list[np.ndarray]:
    """Swap cells (or add bridging patches) so every patch shares ``min_overlap`` cells with a partner."""
    n = a.shape[0]
    patches = [p.copy() for p in patches]
    count = np.bincount(np.concatenate(patches), minlength=n)
    for _ in range(3):  # a swap can lower a third patch's overlap: re-check
        best, partner = best_overlaps(patches, n)
        low = np.flatnonzero(best < min_overlap)
        if not len(low):
            return patches
        patches.extend(_swap_pass(a, patches, low, best, partner, count, min_overlap, coverage, rng))
    best, _ = best_overlaps(patches, n)
    if (best < min_overlap).any():
        msg = (
            f"{int((best < min_overlap).sum())} patches still share fewer than min_overlap={min_overlap} cells "
            "with any other patch after repair. Lower `min_overlap` or raise `coverage`."
        )
        raise ValueError(msg)
    return patches


def _weight_into(a: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Edge weight from each of ``rows`` into the set ``cols``: ``a[rows][:, cols].sum(1)``.

    Read from the rows' own entries, ``O(their edges + n)``; slicing the columns of the whole graph
    (``a[:, cols]``) scans every edge, once per repaired patch, which made the repair quadratic.
    """
    into = np.zeros(a.shape[1])
    into[cols] = 1.0
    return a[rows] @ into


def _swap_pass(a, patches, low, best, partner, count, min_overlap, coverage, rng) -> list[np.ndarray]:
    """Repair the patches in ``low`` in place; return the bridging patches to add."""
    n = a.shape[0]
    added: list[np.ndarray] = []
    for i in low:
        p = patches[i]
        need = min_overlap - int(best[i])
        q = partner[i]
        if q < 0:  # no partner at all: the patch whose cells are most connected to this one
            touch = np.asarray(a[p].sum(0)).ravel() > 0
            votes = np.array([touch[o].sum() if k != i else -1 for k, o in enumerate(patches)])
            q = int(np.argmax(votes))
        # candidates: cells of the partner not in p, nearest (in the graph) to p first
        cand = np.setdiff1d(patches[q], p, assume_unique=True)
        near = _weight_into(a, cand, p) if len(cand) else cand
        cand = cand[np.lexsort((rng.random(len(cand)), -near))]
        # cells of p that can leave: covered more than `coverage` times and not shared with q
        in_q = np.zeros(n, dtype=bool)
        in_q[patches[q]] = True
        leave = p[(count[p] > coverage) & ~in_q[p]]
        leave = leave[np.lexsort((rng.random(len(leave)), -count[leave]))]
        m = min(need, len(cand), len(leave))
        if m < need:
            if len(p) <= min_overlap:
                msg = (
                    f"Cannot give patch {i} ({len(p)} cells) a {min_overlap}-cell overlap with another patch: "
                    "`min_overlap` must be smaller than the patch size. Lower `min_overlap` or raise `n_patch`."
                )
                raise ValueError(msg)
            # too few cells of p are covered elsewhere to swap: add a bridging patch instead, made of
            # the min_overlap cells of p nearest the partner and the partner's cells nearest p
            to_q = _weight_into(a, p, patches[q])
            ordered = p[np.lexsort((rng.random(len(p)), -to_q))]
            bridge = np.concatenate([ordered[:min_overlap], cand[: len(p) - min_overlap]])
            if len(bridge) < len(p):
                bridge = np.concatenate([bridge, ordered[min_overlap : min_overlap + len(p) - len(bridge)]])
            bridge = np.sort(bridge)
            count[bridge] += 1
            added.append(bridge)
            continue
        count[leave[:m]] -= 1
        count[cand[:m]] += 1
        patches[i] = np.sort(np.concatenate([np.setdiff1d(p, leave[:m], assume_unique=True), cand[:m]]))
    return added
