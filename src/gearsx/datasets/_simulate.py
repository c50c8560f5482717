from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from gearsx._anndata import write_record
from gearsx._keys import Key
from gearsx._settings import settings
from gearsx._utils import check_nonnegative_number, check_positive_int, check_positive_number, checks_flags

from ._pseudo_spots import pseudo_spots

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["simulate_tissue"]

#: Full-resolution pixels per micrometre (a Visium 55 µm spot is about 89 px across).
PX_PER_UM = 1.6
#: Mean distance between neighbouring cells, µm (sets the tissue size from the cell count).
CELL_SPACING_UM = 15.0
#: Spot geometry per layout: (diameter µm, centre-to-centre µm, grid).
SPOT_LAYOUTS = {"visium": (55.0, 100.0, "hex"), "st": (100.0, 200.0, "square")}
_CHUNK = 50_000
_N_FOURIER = 6
_GENE_KINDS = ("type_marker", "domain_marker", "gradient", "housekeeping")


@dataclass
class _Tissue:
    """The shared 3-D tissue that every section is cut from (all positions in [0, 1])."""

    layer_cuts: np.ndarray  # (n_layers - 1,)
    wave: np.ndarray  # (2, 2) frequency, phase of the two boundary waves
    blob_centres: np.ndarray  # (n_blobs, 2)
    blob_drift: np.ndarray  # (n_blobs, 2) centre drift per unit depth
    blob_radii: np.ndarray  # (n_blobs,)
    type_probs: np.ndarray  # (n_domains, n_types)
    base: np.ndarray  # (n_genes,) log abundance
    type_effect: np.ndarray  # (n_types, n_genes)
    domain_effect: np.ndarray  # (n_domains, n_genes)
    freqs: np.ndarray  # (3, n_fourier) frequencies over (u, v, z)
    phases: np.ndarray  # (n_fourier,)
    loadings: np.ndarray  # (n_fourier, n_genes), zero outside gradient genes
    gene_kind: np.ndarray  # (n_genes,) str

    @property
    def n_layers(self) -> int:
        return len(self.layer_cuts) + 1

    def domain(self, uv: np.ndarray, z: float) -> np.ndarray:
        u, v = uv[:, 0], uv[:, 1]
        (f1, p1), (f2, p2) = self.wave
        h = v + 0.06 * np.sin(2 * np.pi * (f1 * u + p1)) + 0.04 * np.sin(2 * np.pi * (f2 * u + p2))
        h = h + 0.04 * (z - 0.5) * (u - 0.5)  # layers tilt slowly from section to section
        dom = np.searchsorted(self.layer_cuts, h)
        for b, (c, drift, r) in enumerate(zip(self.blob_centres, self.blob_drift, self.blob_radii, strict=True)):
            centre = c + drift * (z - 0.5)
            radius = r * (1.0 + 0.1 * np.sin(np.pi * z))
            dom[((uv - centre) ** 2).sum(1) < radius**2] = self.n_layers + b
        return dom

    def log_rates(self, uv: np.ndarray, z: float, cell_type: np.ndarray, domain: np.ndarray) -> np.ndarray:
        uvz = np.column_stack([uv, np.full(len(uv), z)])
        fields = np.cos(2 * np.pi * (uvz @ self.freqs) + self.phases)  # (n, n_fourier), smooth in space
        return self.base + self.type_effect[cell_type] + self.domain_effect[domain] + fields @ self.loadings


def _make_tissue(rng: np.random.Generator, n_genes: int, n_types: int, n_layers: int, n_blobs: int) -> _Tissue:
    n_domains = n_layers + n_blobs
    widths = rng.dirichlet(np.full(n_layers, 8.0))
    cuts = np.cumsum(widths)[:-1]
    kinds = rng.choice(len(_GENE_KINDS), size=n_genes, p=[0.4, 0.15, 0.15, 0.3])
    type_effect = np.zeros((n_types, n_genes))
    markers = np.flatnonzero(kinds == 0)
    type_effect[rng.integers(0, n_types, len(markers)), markers] = rng.uniform(1.0, 2.5, len(markers))
    domain_effect = np.zeros((n_domains, n_genes))
    dmarkers = np.flatnonzero(kinds == 1)
    domain_effect[rng.integers(0, n_domains, len(dmarkers)), dmarkers] = rng.uniform(0.8, 2.0, len(dmarkers))
    # Smooth random fields: a few low-frequency plane waves over (u, v), drifting slowly with depth z.
    freqs = np.vstack([rng.normal(0.0, 1.2, (2, _N_FOURIER)), rng.normal(0.0, 0.1, (1, _N_FOURIER))])
    loadings = np.zeros((_N_FOURIER, n_genes))
    grad = np.flatnonzero(kinds == 2)
    loadings[:, grad] = rng.normal(0.0, 1.0, (_N_FOURIER, len(grad))) / np.sqrt(_N_FOURIER)
    loadings[:, grad] *= rng.uniform(0.8, 1.5, len(grad))
    return _Tissue(
        layer_cuts=cuts,
        wave=np.column_stack([rng.uniform(0.5, 2.0, 2), rng.uniform(0, 1, 2)]),
        blob_centres=rng.uniform(0.2, 0.8, (n_blobs, 2)),
        blob_drift=rng.normal(0.0, 0.04, (n_blobs, 2)),
        blob_radii=rng.uniform(0.07, 0.13, n_blobs),
        type_probs=rng.dirichlet(np.full(n_types, 0.4), size=n_domains),
        base=rng.normal(0.0, 1.0, n_genes),
        type_effect=type_effect,
        domain_effect=domain_effect,
        freqs=freqs,
        phases=rng.uniform(0, 1, _N_FOURIER) * 2 * np.pi,
        loadings=loadings,
        gene_kind=np.asarray(_GENE_KINDS)[kinds],
    )


def _dense_to_csr(counts: np.ndarray):
    """CSR float32 matrix from a dense integer count block (faster than ``csr_matrix(dense)``)."""
    import scipy.sparse as sp

    mask = counts > 0
    indptr = np.concatenate([[0], np.cumsum(mask.sum(1), dtype=np.int64)])
    indices = np.nonzero(mask)[1].astype(np.int32)
    return sp.csr_matrix((counts[mask].astype(np.float32), indices, indptr), shape=counts.shape)


def _sample_section(
    tissue: _Tissue,
    seed: np.random.SeedSequence,
    n_cells: int,
    z: float,
    efficiency: np.ndarray,
    depth: float,
    dispersion: float,
    *,
    progress: bool,
):
    """Cells of one section: positions in [0, 1]^2, type, domain and negative-binomial counts (CSR).

    Counts are drawn in chunks of cells, each with its own child seed, on a thread pool
    (numpy's generators release the GIL): the result depends on the seed only, not on
    the number of threads.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    import scipy.sparse as sp

    from gearsx._utils import progress_bar

    seed_cells, seed_counts = seed.spawn(2)
    rng = np.random.default_rng(seed_cells)
    uv = rng.uniform(0.0, 1.0, (n_cells, 2))
    domain = tissue.domain(uv, z)
    # Inverse-CDF draw of each cell's type from its domain's type proportions (vectorised).
    cdf = np.cumsum(tissue.type_probs[domain], axis=1)
    cell_type = np.minimum((rng.uniform(size=(n_cells, 1)) > cdf).sum(1), cdf.shape[1] - 1)
    size = rng.lognormal(0.0, 0.35, n_cells)
    starts = range(0, n_cells, _CHUNK)
    chunk_seeds = seed_counts.spawn(len(starts))

    def block(s: int, chunk_seed: np.random.SeedSequence):
        crng = np.random.default_rng(chunk_seed)
        sl = slice(s, s + _CHUNK)
        logits = tissue.log_rates(uv[sl], z, cell_type[sl], domain[sl])
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        mean = depth * size[sl, None] * p * efficiency
        # Negative binomial as a gamma-Poisson mixture with inverse dispersion `dispersion`.
        gamma = crng.standard_gamma(dispersion, size=mean.shape, dtype=np.float32)
        return _dense_to_csr(crng.poisson(mean * (gamma / dispersion)))

    workers = max(1, min(len(starts), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = pool.map(block, starts, chunk_seeds)
        blocks = list(progress_bar(futures, total=len(starts), desc="simulating cells", enabled=progress, unit="chunk"))
    return uv, cell_type, domain, sp.vstack(blocks, format="csr")


@checks_flags
def simulate_tissue(
    n_slides: int = 3,
    n_cells_per_slide: int = 20_000,
    n_genes: int = 300,
    *,
    spot_layout: Literal["visium", "st", "cells"] = "visium",
    n_sc_cells: int | None = None,
    n_cell_types: int = 8,
    n_layers: int = 4,
    n_blobs: int = 2,
    batch_strength: float = 0.5,
    depth: float = 400.0,
    sc_depth: float = 1500.0,
    dispersion: float = 4.0,
    random_state: int = 0,
    progress: bool | None = None,
) -> tuple[AnnData, AnnData]:
    """Simulate spatial-transcriptomics slides and an unpaired single-cell data set of one tissue.

    The embedded default data set of gearsx (the real data sets cannot ship with the
    package). A 3-D tissue is cut into parallel sections; ``n_slides`` of them are
    measured as spatial slides and one more, lying between them, as dissociated
    single cells.

    The tissue has ``n_layers`` wavy, slowly tilting bands (cortex-like layers) and
    ``n_blobs`` round domains that drift and change size between sections. Each cell
    gets a type drawn from its domain's type proportions. Log expression rates add a
    gene's base abundance, cell-type markers, domain markers (an effect of the
    micro-environment whatever the cell type) and smooth spatial gradients (random
    low-frequency plane waves); counts are negative binomial (gamma-Poisson with
    inverse dispersion ``dispersion``) around ``depth x size factor x rates``.

    Each slide and the single-cell data set multiply every gene by its own capture
    efficiency ``exp(N(0, batch_strength^2))``: a realistic batch effect, strong
    enough at the default that a linear classifier on PCA separates the slides.
    Slide coordinates are randomly rotated and translated (the arbitrary gauge of a
    real slide); the single cells' true positions are kept for evaluation only.

    Parameters
    ----------
    n_slides
        Number of spatial slides.
    n_cells_per_slide
        Cells in each section (a square of side ``15 µm * sqrt(n)``); with a spot
        layout only the cells under spots are measured (about a quarter for Visium).
    n_genes
        Number of genes.
    spot_layout
        ``'visium'`` (55 µm spots, 100 µm apart, hexagonal), ``'st'`` (100 µm spots,
        200 µm apart, square) or ``'cells'`` (single-cell resolution, no spots).
    n_sc_cells
        Cells in the single-cell data set; default ``n_cells_per_slide // 2``.
    n_cell_types
        Number of cell types.
    n_layers, n_blobs
        Number of band-shaped and of round spatial domains.
    batch_strength
        Standard deviation of the log capture efficiencies (0 disables the batch effect).
    depth
        Mean counts per cell on the slides (before capture efficiency).
    sc_depth
        Mean counts per cell in the single-cell data set.
    dispersion
        Inverse dispersion of the negative binomial (larger is closer to Poisson).
    random_state
        Seed. The tissue, every slide and the single-cell section have their own
        derived streams, so changing ``n_sc_cells`` does not change the slides.
    progress
        Show a progress bar over chunks of cells (default: for more than 200,000 cells,
        following ``gx.settings.progress_bar``).

    Returns
    -------
    ``(adata_st, adata_sc)``

    ``adata_st``
        Spots (or cells) of all slides: raw counts in ``X`` (CSR, float32);
        ``obs['slide']`` (categorical), ``obs['n_cells']``, ``obs['domain']`` and
        ``obs['cell_type']`` (majority of the spot's cells); ``obsm['spatial']``
        (full-resolution pixel-like (x, y) units, 1.6 px per µm, per-slide gauge);
        ``obsm['spot_cell_counts']`` (cells of each type per spot).
    ``adata_sc``
        Single cells: raw counts in ``X``; ``obs['cell_type']``, ``obs['domain']``;
        ``obsm['spatial_gt']`` (true positions in pixel-like units; for evaluation only).

    Both carry ``var['gene_kind']`` (``type_marker``, ``domain_marker``, ``gradient``,
    ``housekeeping``) and the simulation parameters in ``uns['gears_simulation']``.

    Examples
    --------
    >>> import gearsx as gx
    >>> st, sc = gx.datasets.simulate_tissue(n_cells_per_slide=5000, random_state=0)
    >>> st.obs["slide"].cat.categories.tolist()
    ['slide_0', 'slide_1', 'slide_2']
    >>> sc.obsm["spatial_gt"].shape
    (2500, 2)
    """
    # Over 80 lines on purpose: checks of its 16 arguments, then the generative steps (helpers above) wired in order.
    random_state = check_positive_int(random_state, name="random_state", minimum=0)
    import anndata as ad
    import pandas as pd

    n_slides = check_positive_int(n_slides, name="n_slides")
    n_cells_per_slide = check_positive_int(n_cells_per_slide, name="n_cells_per_slide", minimum=10)
    n_genes = check_positive_int(n_genes, name="n_genes", minimum=10)
    n_sc_cells = check_positive_int(
        n_cells_per_slide // 2 if n_sc_cells is None else n_sc_cells, name="n_sc_cells", minimum=1
    )
    n_cell_types = check_positive_int(n_cell_types, name="n_cell_types", minimum=2)
    n_layers = check_positive_int(n_layers, name="n_layers", minimum=1)
    n_blobs = check_positive_int(n_blobs, name="n_blobs", minimum=0)
    if spot_layout not in (*SPOT_LAYOUTS, "cells"):
        msg = f"`spot_layout` must be one of {(*SPOT_LAYOUTS, 'cells')}; got {spot_layout!r}."
        raise ValueError(msg)
    batch_strength = check_nonnegative_number(batch_strength, name="batch_strength")
    depth = check_positive_number(depth, name="depth")
    sc_depth = check_positive_number(sc_depth, name="sc_depth")
    dispersion = check_positive_number(
        dispersion, name="dispersion", hint=" (finite: for counts close to Poisson pass a large value such as 1e6)"
    )
    if progress is None:
        progress = settings.progress_bar and max(n_sc_cells, n_cells_per_slide) > 200_000

    seeds = np.random.SeedSequence(random_state).spawn(n_slides + 2)
    rng_tissue = np.random.default_rng(seeds[0])
    tissue = _make_tissue(rng_tissue, n_genes, n_cell_types, n_layers, n_blobs)
    # Section depths: slides evenly spaced through the tissue, the single cells in between.
    z_slides = np.linspace(0.0, 1.0, n_slides) if n_slides > 1 else np.array([0.0])
    z_sc = float(np.mean(z_slides[n_slides // 2 - 1 : n_slides // 2 + 1])) if n_slides > 1 else 0.5
    side_um = CELL_SPACING_UM * np.sqrt(n_cells_per_slide)
    side_sc_um = CELL_SPACING_UM * np.sqrt(n_sc_cells)
    genes = pd.Index([f"gene_{g:04d}" for g in range(n_genes)])
    var = pd.DataFrame({"gene_kind": pd.Categorical(tissue.gene_kind, categories=_GENE_KINDS)}, index=genes)
    type_cats = [f"type_{t}" for t in range(n_cell_types)]
    domain_cats = [f"layer_{i}" for i in range(n_layers)] + [f"blob_{b}" for b in range(n_blobs)]

    def cells_adata(uv, cell_type, domain, counts, side):
        obs = pd.DataFrame(
            {
                Key.cell_type: pd.Categorical.from_codes(cell_type, categories=type_cats),
                Key.domain: pd.Categorical.from_codes(domain, categories=domain_cats),
            }
        )
        obs.index = obs.index.astype(str)
        a = ad.AnnData(X=counts, obs=obs, var=var.copy())
        a.obsm[Key.spatial] = uv * side * PX_PER_UM
        return a

    slides = []
    for s in range(n_slides):
        seed_slide, seed_cells = seeds[1 + s].spawn(2)
        rng = np.random.default_rng(seed_slide)
        eff = np.exp(rng.normal(0.0, batch_strength, n_genes))
        uv, ct, dom, counts = _sample_section(
            tissue, seed_cells, n_cells_per_slide, z_slides[s], eff, depth, dispersion, progress=progress
        )
        cells = cells_adata(uv, ct, dom, counts, side_um)
        if spot_layout == "cells":
            slide = cells
            slide.obs[Key.n_cells] = 1
            slide.obsm[Key.spot_cell_counts] = pd.DataFrame(
                np.eye(n_cell_types, dtype=np.int64)[ct], index=slide.obs_names, columns=type_cats
            )
        else:
            diameter, c2c, grid = SPOT_LAYOUTS[spot_layout]
            slide = pseudo_spots(
                cells,
                spot_diameter=diameter * PX_PER_UM,
                center_to_center=c2c * PX_PER_UM,
                layout=grid,
                label_key=Key.cell_type,
            )
            cell_spot = slide.uns.pop(Key.pseudo_spots)["cell_spot"]
            inside = cell_spot >= 0
            dom_counts = np.zeros((slide.n_obs, len(domain_cats)), dtype=np.int64)
            np.add.at(dom_counts, (cell_spot[inside], dom[inside]), 1)
            slide.obs[Key.domain] = pd.Categorical.from_codes(dom_counts.argmax(1), categories=domain_cats)
        # Each slide sits in the scanner in its own pose: rotate about the centre and translate.
        xy = slide.obsm[Key.spatial]
        theta = rng.uniform(0.0, 2 * np.pi)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        xy = (xy - xy.mean(0)) @ rot.T
        slide.obsm[Key.spatial] = xy - xy.min(0) + rng.uniform(200.0, 600.0, 2)
        slide.obs[Key.slide] = f"slide_{s}"
        slide.obs_names = [f"slide_{s}_{name}" for name in slide.obs_names]
        slides.append(slide)

    adata_st = ad.concat(slides, merge="same")
    adata_st.obs[Key.slide] = pd.Categorical(
        adata_st.obs[Key.slide], categories=[f"slide_{s}" for s in range(n_slides)]
    )
    adata_st.obs = adata_st.obs[[Key.slide, Key.n_cells, Key.domain, Key.cell_type]]

    seed_sc, seed_cells = seeds[-1].spawn(2)
    eff = np.exp(np.random.default_rng(seed_sc).normal(0.0, batch_strength, n_genes))
    uv, ct, dom, counts = _sample_section(
        tissue, seed_cells, n_sc_cells, z_sc, eff, sc_depth, dispersion, progress=progress
    )
    adata_sc = cells_adata(uv, ct, dom, counts, side_sc_um)
    adata_sc.obsm[Key.spatial_gt] = adata_sc.obsm.pop(Key.spatial)
    adata_sc.obs_names = [f"cell_{i}" for i in range(n_sc_cells)]

    params = {
        "n_slides": n_slides,
        "n_cells_per_slide": n_cells_per_slide,
        "n_genes": n_genes,
        "spot_layout": spot_layout,
        "n_sc_cells": n_sc_cells,
        "n_cell_types": n_cell_types,
        "n_layers": n_layers,
        "n_blobs": n_blobs,
        "batch_strength": float(batch_strength),
        "depth": float(depth),
        "sc_depth": float(sc_depth),
        "dispersion": float(dispersion),
        "random_state": int(random_state),
        "px_per_um": PX_PER_UM,
        "z_slides": z_slides,
        "z_sc": z_sc,
    }
    for a, role in ((adata_st, "st"), (adata_sc, "sc")):
        write_record(a, Key.simulation, params, role=role)
    return adata_st, adata_sc
