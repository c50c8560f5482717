"""gx.geometry.gene_agreement: do two expression matrices' genes co-vary alike?"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gearsx.geometry import gene_agreement


def _programs(n_query=400, n_ref=800, n_genes=40, seed=0, noise=1.0):
    """Query and reference rows whose genes follow the same 5 shared programs, plus noise of SD ``noise``."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(5, n_genes))

    def rows(n):
        return rng.normal(size=(n, 5)) @ loadings + noise * rng.normal(size=(n, n_genes))

    return rows(n_query), rows(n_ref)


def test_the_same_programs_agree_and_mislabelled_genes_do_not():
    query, ref = _programs()
    same = gene_agreement(query, ref)
    assert same.agreement > 0.95
    assert same.query_reliability > 0.9
    assert same.reference_reliability > 0.9
    assert same.n_genes == 40
    perm = np.random.default_rng(1).permutation(40)
    swapped = gene_agreement(query[:, perm], ref)
    assert abs(swapped.agreement) < 0.3
    # the reliability is the query's own: a relabelling of its genes leaves it as it was
    assert swapped.query_reliability > 0.9


def test_a_gene_s_scale_and_offset_change_nothing():
    """Another platform's capture (a factor per gene) or another centring leaves the correlations as they are."""
    query, ref = _programs()
    rng = np.random.default_rng(2)
    captured = query * rng.lognormal(0.0, 0.7, 40) + rng.normal(size=40)
    a, b = gene_agreement(query, ref, random_state=3), gene_agreement(captured, ref, random_state=3)
    assert a.agreement == pytest.approx(b.agreement, abs=1e-9)
    assert a.query_reliability == pytest.approx(b.query_reliability, abs=1e-9)


def test_a_small_query_is_corrected_for_its_noise():
    """40 rows of weak programs give noisy correlations: the raw figure falls, the corrected agreement does not."""
    query, ref = _programs(n_query=40, n_ref=4000, noise=3.0)
    small = gene_agreement(query, ref)
    big = gene_agreement(*_programs(n_query=4000, n_ref=4000, noise=3.0))
    assert small.raw < big.raw - 0.1
    assert small.query_reliability < big.query_reliability
    assert small.agreement > 0.85
    # genes that do not co-vary at all (noise alone): nothing reliable to compare
    noise = gene_agreement(np.random.default_rng(4).normal(size=(400, 40)), ref)
    assert noise.query_reliability < 0.2


def test_sparse_input_sampled_rows_and_capped_genes():
    query, ref = _programs(n_query=3000)
    dense = gene_agreement(query, ref, random_state=0)
    sparse = gene_agreement(sp.csr_matrix(query), sp.csr_matrix(ref), random_state=0)
    assert sparse.agreement == pytest.approx(dense.agreement, abs=1e-9)
    sampled = gene_agreement(query, ref, max_rows=500, random_state=0)
    assert sampled.agreement == pytest.approx(dense.agreement, abs=0.05)
    capped = gene_agreement(query, ref, max_genes=10)
    assert capped.n_genes == 10
    # the ten genes kept are the reference's most variable
    assert capped.agreement > 0.9
    # constant genes are left out; fewer than three varying genes leave nothing to read
    query[:, 5] = 1.0
    assert gene_agreement(query, ref).n_genes == 39
    empty = gene_agreement(np.ones((50, 40)), ref)
    assert np.isnan(empty.agreement)
    assert empty.n_genes == 0
    assert np.isnan(gene_agreement(query[:3], ref).agreement)


def test_bad_inputs_are_named():
    query, ref = _programs()
    with pytest.raises(ValueError, match="same genes"):
        gene_agreement(query[:, :30], ref)
    with pytest.raises(ValueError, match="max_rows"):
        gene_agreement(query, ref, max_rows=2)
    with pytest.raises(ValueError, match="max_genes"):
        gene_agreement(query, ref, max_genes=2.5)
    query[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        gene_agreement(query, ref)
