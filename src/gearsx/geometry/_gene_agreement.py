"""Do two expression matrices' genes co-vary alike? A check that their profiles can be compared gene by gene."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gearsx._anndata import check_finite_matrix
from gearsx._utils import as_rng, check_positive_int

#: At most this many rows of each side enter the correlations (a seeded sample): the statistic's noise at
#: this size is far below the gap it reads (see :func:`gene_agreement`).
MAX_ROWS = 5_000
#: At most this many genes, those of the largest variance in the reference: the cost grows with their square.
MAX_GENES = 500


@dataclass(frozen=True)
class GeneAgreement:
    """How alike two expression matrices' genes co-vary (:func:`~gearsx.geometry.gene_agreement`)."""

    #: the raw correlation divided by the square root of both reliabilities, clipped to [-1, 1]; NaN
    #: where a reliability is not positive (nothing to read)
    agreement: float
    #: correlation between the off-diagonal entries of the two gene-gene correlation matrices
    raw: float
    #: split-half reliability of the query's gene-gene correlations (Spearman-Brown; 1: measured exactly)
    query_reliability: float
    #: the same for the reference
    reference_reliability: float
    #: genes compared (non-constant on both sides, at most ``max_genes``)
    n_genes: int


def _dense_rows(x, rows: np.ndarray, genes: np.ndarray) -> np.ndarray:
    block = x[rows][:, genes]
    block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
    return block.astype(np.float64)


def _correlations(x: np.ndarray) -> np.ndarray:
    """Off-diagonal upper triangle of the gene-gene Pearson correlation matrix of ``x`` (rows: observations)."""
    z = x - x.mean(0)
    sd = np.sqrt((z * z).mean(0))
    z = z / np.where(sd > 0, sd, np.inf)  # a gene constant in this part correlates with nothing
    c = z.T @ z / len(z)
    return c[np.triu_indices(len(c), 1)]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else float("nan")


def _reliability(x: np.ndarray, rng: np.random.Generator) -> float:
    """Split-half reliability of the gene-gene correlations of ``x``, stepped up to the whole by Spearman-Brown."""
    order = rng.permutation(len(x))
    half = len(x) // 2
    r = _pearson(_correlations(x[order[:half]]), _correlations(x[order[half:]]))
    return 2.0 * r / (1.0 + r) if r > 0 else 0.0


def gene_agreement(
    query,
    reference,
    *,
    max_rows: int = MAX_ROWS,
    max_genes: int = MAX_GENES,
    random_state: int = 0,
) -> GeneAgreement:
    """Measure how alike the genes co-vary in two expression matrices of the same genes.

    Comparing a cell's profile with a spot's gene by gene (the anchors' expression view,
    :func:`~gearsx.geometry.match_reference`) assumes that both were measured alike. One consequence is
    checkable without positions: the genes then co-vary alike on both sides. This function
    correlates the off-diagonal entries of the two gene-gene correlation matrices (Pearson, over
    rows) and corrects that correlation for the noise of each matrix: each side's rows are split
    in two random halves, the halves' matrices correlated and stepped up to the whole by the
    Spearman-Brown formula (its *reliability*), and the raw correlation divided by the square root
    of both reliabilities (Spearman's correction for attenuation). 1: the two sides' genes co-vary
    as alike as their noise allows; 0: unrelated. The correction keeps a small query from reading
    as unlike the reference merely because its correlations are noisy. Pearson correlations are
    unchanged by a gene's scale and offset, so a gene captured more or less efficiently on one
    side leaves the figure unchanged.

    Where a reliability is low, the query's genes hardly co-vary at all (a single sorted cell
    population, whose genes vary little together) or too few rows were given, and the agreement
    says little. Measured on our benchmark splits (see :doc:`/anchoring`): queries of the
    reference's own platform scored 0.45-1.0 as whole samples and 0.09-1.0 as one sorted
    population (below 0.2 only at a reliability of 0.31 or less); Tasic's scRNA-seq against the
    seqFISH section scored 0.04-0.09 at a reliability of 0.70-0.99, whatever subset of 20 cells or
    more was taken.

    Parameters
    ----------
    query, reference
        ``(n, g)`` and ``(m, g)`` expression of the same genes in the same order (dense or sparse),
        such as ``layers['gears_centered']``.
    max_rows
        Each side larger than this is sampled to this many rows (seeded by ``random_state``).
    max_genes
        At most this many genes are compared: those of the largest variance in ``reference``
        (the cost grows with their square).
    random_state
        Seed of the row samples and of the split halves.

    Returns
    -------
    :class:`GeneAgreement` with the agreement, the raw correlation, both reliabilities and the
    number of genes compared. With fewer than 3 genes that vary on both sides, or fewer than 4 rows
    on a side, every figure is NaN and no gene is counted.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import gene_agreement
    >>> rng = np.random.default_rng(0)
    >>> loadings = rng.normal(size=(5, 40))  # 40 genes driven by 5 shared programs
    >>> ref = rng.normal(size=(800, 5)) @ loadings + rng.normal(size=(800, 40))
    >>> query = rng.normal(size=(300, 5)) @ loadings + rng.normal(size=(300, 40))
    >>> gene_agreement(query, ref).agreement > 0.9
    True
    >>> gene_agreement(query[:, rng.permutation(40)], ref).agreement < 0.3  # the genes mislabelled
    True
    """
    q_shape, r_shape = np.shape(query), np.shape(reference)
    if len(q_shape) != 2 or len(r_shape) != 2 or q_shape[1] != r_shape[1]:
        msg = f"`query` and `reference` must be 2-D with the same genes (columns); got {q_shape} and {r_shape}."
        raise ValueError(msg)
    max_rows = check_positive_int(max_rows, name="max_rows", minimum=4)
    max_genes = check_positive_int(max_genes, name="max_genes", minimum=4)
    rng = as_rng(random_state)
    nan = GeneAgreement(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    if q_shape[0] < 4 or r_shape[0] < 4:
        return nan

    def sample(n: int) -> np.ndarray:
        return np.sort(rng.choice(n, max_rows, replace=False)) if n > max_rows else np.arange(n)

    all_genes = np.arange(q_shape[1])
    xq = _dense_rows(query, sample(q_shape[0]), all_genes)
    xr = _dense_rows(reference, sample(r_shape[0]), all_genes)
    for x, name in ((xq, "query"), (xr, "reference")):
        check_finite_matrix(x, name, fix="pass finite values (impute or remove them)")
    var_r = xr.var(0)
    varies = np.flatnonzero((xq.var(0) > 0) & (var_r > 0))
    if len(varies) < 3:
        return nan
    genes = varies[np.argsort(-var_r[varies], kind="stable")[:max_genes]]
    xq, xr = xq[:, genes], xr[:, genes]
    raw = _pearson(_correlations(xq), _correlations(xr))
    rel_q, rel_r = _reliability(xq, rng), _reliability(xr, rng)
    agreement = float(np.clip(raw / np.sqrt(rel_q * rel_r), -1.0, 1.0)) if rel_q > 0 and rel_r > 0 else float("nan")
    return GeneAgreement(agreement, raw, rel_q, rel_r, len(genes))
