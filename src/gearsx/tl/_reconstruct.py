from __future__ import annotations

import logging
import numbers
import time
from typing import TYPE_CHECKING, Literal

import numpy as np

from gearsx._anndata import check_key_added, check_obsm_key, recorded_encoder_id, set_obs_rep, write_record
from gearsx._keys import Key
from gearsx._utils import (
    check_nonnegative_number,
    check_positive_int,
    check_positive_number,
    checks_flags,
    renamed_arguments,
    resolve_client,
)
from gearsx._version import __version__
from gearsx.geometry._anchor import TEMPERATURE

if TYPE_CHECKING:
    from anndata import AnnData
    from distributed import Client

    from gearsx.model import GEARS

__all__ = ["reconstruct"]

logger = logging.getLogger(__name__)

#: Fewest cells in a patch (and so in a reconstruction).
_MIN_PATCH = 16
#: Cells per patch at ``n_patch=None`` (the largest training miniset), or all cells when fewer.
DEFAULT_N_PATCH = 384
#: Cells shared between neighbouring patches at ``min_overlap=None``, or half a patch when smaller.
DEFAULT_MIN_OVERLAP = 64
#: Cells averaged per embedding at ``smooth_k=None``, or one in ``SMOOTH_FRACTION`` cells when fewer.
DEFAULT_SMOOTH_K = 50
#: Below ``SMOOTH_FRACTION * DEFAULT_SMOOTH_K`` cells, ``smooth_k=None`` averages one cell in this many.
SMOOTH_FRACTION = 12
#: Default weight of the intrinsic offsets against the anchors (``anchor_weight``).
ANCHOR_WEIGHT = 0.1
#: Default number of expected-distance steps of an anchored layout (``anchor_distance_steps``).
ANCHOR_DISTANCE_STEPS = 3


@renamed_arguments(embedding_key="use_rep", knn="n_neighbors")
@checks_flags
def reconstruct(
    adata: AnnData,
    model: GEARS,
    *,
    use_rep: str = Key.embedding,
    n_patch: int | None = None,
    min_overlap: int | None = None,
    coverage: int = 2,
    prune: bool = False,
    n_neighbors: int = 15,
    jaccard: float = 0.1,
    smooth_k: int | None = None,
    anchor: Literal["auto", "reference"] | None = "auto",
    reference_slide: str | None = None,
    anchor_k: int | None = None,
    anchor_expression_weight: float | None = None,
    anchor_temperature: float | None = TEMPERATURE,
    anchor_transport: bool = False,
    anchor_weight: float = ANCHOR_WEIGHT,
    anchor_distance_steps: int = ANCHOR_DISTANCE_STEPS,
    refine_steps: int = 4,
    batch_size: int = 16,
    allow_unadapted: bool = False,
    n_communities: int | None = None,
    random_state: int = 0,
    key_added: str = Key.result,
    client: Client | None = None,
    progress: bool | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Reconstruct a spatial layout of (dissociated) cells from their embeddings (see :ref:`gears-reconstruction`).

    0. Each cell's embedding is averaged with its ``smooth_k - 1`` nearest neighbours
       (:func:`gearsx.geometry.neighbor_average`; see Notes).
    1. Locality graph: mutual kNN of the embeddings, edges pruned by neighbour-set
       Jaccard (:func:`gearsx.geometry.locality_graph`; pynndescent above 50,000 cells); cells and
       components the graph cannot reach are attached by their nearest neighbour
       (reported in ``uns``), never dropped.
    2. Patches of ``n_patch`` cells grown by random walks until every cell is covered
       ``coverage`` times, each sharing at least ``min_overlap`` cells with another patch
       (:func:`gearsx.geometry.random_walk_patches`).
    3. Each patch's geometry predicted by ``model`` (batched; generator + refinement), in this
       process or, with ``client``, as tasks on a dask cluster
       (:meth:`gearsx.model.GEARS.predict_patches`).
    4. Stitched into one layout by :func:`gearsx.tl.stitch` (the *intrinsic* layout).
    5. Reference anchoring (``anchor``): each cell is matched to its ``anchor_k`` most similar
       spots of the model's reference in the shared embedding and the expression, and anchored at
       their similarity-weighted mean position; each anchor counts by how localised and how similar
       its spots are. The anchors give the global frame, the intrinsic layout the local
       arrangement, fused in one sparse solve
       (:func:`gearsx.geometry.fuse_anchor`). The fused layout is then spread so that the cells'
       distances match those expected from their anchors and uncertainties (an anchor is an expected
       position, drawn towards the middle the less certain it is;
       :func:`gearsx.geometry.expected_distance_layout`). With ``anchor='auto'`` this happens only
       when the query looks like the reference's tissue (see Notes).

    Parameters
    ----------
    adata
        Cells with embeddings in ``obsm[use_rep]`` (for scRNA-seq: written by
        :func:`gearsx.tl.fit_adapter`).
    model
        A trained :class:`gearsx.model.GEARS`.
    use_rep
        ``obsm`` key of the embeddings. They must come from the encoder whose ST embeddings trained
        ``model``: when ``fit_adapter`` (or ``fit_encoder``) recorded the encoder's fingerprint and the
        model kept it (:meth:`gearsx.model.GEARS.train`), another encoder's embeddings are an error,
        and so, when anchoring, are ST data embedded again after the model was trained.
    n_patch
        Cells per patch. ``None`` (default): 384 (the largest training miniset at
        :meth:`gearsx.model.GEARS.train`'s defaults), or all the cells, one patch, when there are
        fewer (a plate of a few hundred cells). A number larger than the data is an error.
    min_overlap
        Cells each patch is guaranteed to share with at least one other patch (the cover
        is repaired where needed, see :func:`gearsx.geometry.random_walk_patches`). ``None``
        (default): 64, or half a patch when patches hold fewer than 128 cells. A number must be
        smaller than ``n_patch``.
    coverage
        Patches covering each cell at least.
    prune
        Drop redundant patches of the cover (see :func:`gearsx.geometry.random_walk_patches`).
        Pruning trades accuracy for speed (fewer overlaps constrain the stitch), and the
        cover is already thin (walks rarely revisit covered cells), so it is off by default.
    n_neighbors, jaccard
        Locality graph: neighbours per cell in embedding space (formerly ``knn``) and the
        Jaccard threshold of its edge pruning.
    smooth_k
        Cells averaged per embedding before the graph and the patch predictions (the cell
        and its ``smooth_k - 1`` nearest neighbours in embedding space); ``1`` uses the raw
        embeddings. ``None`` (default): 50, or one cell in twelve on a query of fewer than 600
        cells (at least 1; see Notes). A number must be smaller than the number of cells.
    anchor
        ``'auto'`` (default): anchor in the reference frame when the query looks like the
        reference's tissue, else intrinsic mode; ``'reference'``: always anchor; ``None``: intrinsic
        mode (the layout is defined up to rotation, reflection, translation and scale). The
        decision and its figures go to ``uns['gears']['anchor']``; ``'auto'`` warns when it leaves
        the cells unanchored, since their layout is then not in the reference's frame. With ``None``, the
        ``reference_slide`` and ``anchor_*`` arguments are read by nothing, so setting one is an error.
    reference_slide
        Reference slide whose frame anchored layouts live in (default: the slide the query's
        matches are most similar on).
    anchor_k
        Reference spots matched per cell, weighed by ``anchor_temperature``. ``None`` (default):
        ``50``, or one less than a slide's spots on a slide of no more than 50 (as scanpy's
        ``pca`` caps ``n_comps`` by the data); the value used on the chosen slide is recorded in
        ``uns['gears']['anchor']['anchor_k']``. A number is used as given: a slide of no more
        than ``anchor_k`` spots is then left out of the candidates, and it is an error when no
        slide is left. The decision and each cell's chance that its matches are real compare only
        the best ``20`` on every slide (fewer, with a warning, when a candidate slide's
        ``anchor_k`` is smaller; pass ``reference_slide`` to avoid it).
        More matches describe a cell's possible places better: against ``20``, ``50`` raised edge
        ROC-AUC on every setting of our same-tissue benchmark on the MERFISH, Xenium and seqFISH
        panels, while on an atlas whose genes pin each cell's place (the BDTNP embryo) ``20`` did
        a little better (see :doc:`/anchoring`).
    anchor_expression_weight
        Weight of the expression in the anchors' matches, in ``[0, 1]`` (``0``: the embedding
        alone; see :func:`gearsx.geometry.match_reference`). ``None`` (default): ``0.75`` when the
        model's reference and ``adata`` both hold ``layers['gears_centered']`` with the reference's
        genes and the query's genes co-vary like the spots' (below), else ``0`` (a warning when the
        cells are anchored, and the reason in ``uns['gears']['anchor']['expression']``); a number above
        ``0`` requires both layers and is used as given. The embedding decides whether to anchor either
        way. How alike the query's genes co-vary with the spots' is measured whenever the expression
        could weigh (``gene_agreement``, :func:`gearsx.geometry.gene_agreement`): below ``0.2``, with
        both sides' gene-gene correlations reliable, the query reads as measured by another technology
        (as scRNA-seq against an imaging panel can), where comparing profiles gene by gene misleads, and the
        default matches on the embedding alone; a number given here is kept, with a warning that
        suggests ``0`` (see :doc:`/anchoring`).
    anchor_temperature
        How the ``anchor_k`` matches are weighed in a cell's anchor: a softmax of their similarity
        at this temperature, in units of the similarity's spread (default ``0.5``); ``None``: the
        plain mean of the matched spots (see :func:`gearsx.geometry.match_reference`).
    anchor_transport
        Weigh each cell's anchor with its barycentre under a balanced transport plan of the cells'
        ``layers['gears_centered']`` profiles onto the spots' (both marginals uniform, at the mean
        entropy of the matches' own weights; :func:`gearsx.geometry.transport_anchors`), by
        inverse variance. Needs POT (``pip install 'gearsx[transport]'``) and the expression view
        (an error names what is missing, and ``anchor_expression_weight=0`` contradicts it);
        where the default weight switches the expression off (another technology, see
        ``anchor_expression_weight``) the transport is off too, and
        ``uns['gears']['anchor']['transport']`` says why. Default ``False``: on our benchmarks it
        raised Spearman and edge ROC-AUC together on 12 settings of 17 where the cells come from the
        tissue the spots cover, and lowered them on seqFISH where spots hold about one cell, and on
        queries from another region of the spots' section, which a balanced plan must still spread
        over every spot (see :doc:`/anchoring`). Each cell's spots in
        ``obsm['gears_anchor_spots']`` are then its matches and the plan's ``anchor_k`` heaviest
        spots for its row (``2 * anchor_k`` columns), weighed by their shares in the blend.
    anchor_weight
        Weight of the intrinsic layout's local offsets against the anchors (``0``: the anchors).
        The default ``0.1`` (was ``1`` before the anchors' matches weighed the expression) keeps the
        anchors' global layout and lets the intrinsic layout adjust cells locally; with matches this
        good the intrinsic offsets lower the global scores at larger weights (see :doc:`/anchoring`).
        At ``0`` an anchored run skips steps 0-4, since the fusion would return the anchors whatever
        the intrinsic layout: the same layout and uncertainty, several times faster on large queries
        (a million cells: see :doc:`/scaling`), without the intrinsic layout and the stitched
        ``obsp`` graphs (those of an earlier run under ``key_added`` are removed). Such a run
        places any number of cells, the intrinsic layout at least 16 (the smallest patch), and
        ``n_patch``, ``min_overlap``, ``n_neighbors`` and ``smooth_k`` are not used. A query that
        ``anchor='auto'`` does not anchor gets its intrinsic layout as usual.
    anchor_distance_steps
        Steps of the expected-distance layout that follows the fusion of an anchored run
        (:func:`gearsx.geometry.expected_distance_layout`; ``0``: keep the fused layout, close to
        the cells' expected positions). The default ``3`` lowers Stress-1 by 0.007-0.05 on every
        same-tissue benchmark, most of what ten steps give; more steps move poorly localised cells
        farther from their expected positions, which blurs averages over groups of cells (see
        :doc:`/anchoring`).
    refine_steps
        Refinement steps of a geometry model built with ``structure='refiner'`` (0: generator only);
        the default model has no refiner and ignores it.
    batch_size
        Patches per forward pass.
    n_communities
        Stitch this many communities of patches separately and align them, instead of one stitch of
        all patches (``None``); with ``client``, each community is a task on the cluster (see
        :func:`gearsx.tl.stitch` and :doc:`/scaling`).
    allow_unadapted
        Accept embeddings without an adapter record in ``uns['gears_adapter']`` (e.g.
        held-out ST spots). By default their absence is an error, because unadapted SC
        embeddings are off the ST support the model was trained on.
    random_state
        Seed of the graph search, patches, refinement noise and stitching.
    key_added
        Prefix of the written keys.
    client
        A running :class:`distributed.Client`: predict the patches as tasks on its workers (the
        model's weights are sent once; patches stream in chunks). Default: ``gx.settings.dask_client``,
        which is ``None`` (in process) unless set. The coordinates are the same either way at a fixed
        ``random_state`` when this process runs torch on as many threads as each worker (see
        :doc:`/scaling`).
    progress
        Show a progress bar over patch batches (default: ``gx.settings.progress_bar``).
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None`` or the copy. Writes ``obsm['X_gears_spatial']`` (for ``key_added='gears'``),
    ``obsp['gears_distances']``, ``obsp['gears_connectivities']``, ``obs['gears_uncertainty']``
    (per-cell positional uncertainty: in anchored mode how far the cell may be from its position,
    from the spread of its matched spots around its anchor (widened towards the slide's spread
    where the cell's best matches in the embedding are no better than shuffled cells', and to it for cells without a
    single count in ``layers['counts']`` or ``X``), how far the layout moved it from
    that anchor, and the patches' disagreement; in reference units; else the patches' disagreement;
    see :doc:`/anchoring`) and
    ``uns['gears']`` (stitching parameters and diagnostics, ``uns['gears']['reconstruct']`` with the
    graph and patch diagnostics and the wall time of each step in ``seconds``,
    ``uns['gears']['anchor']`` with the anchoring decision). Anchored
    runs also keep ``obsm['X_gears_intrinsic']`` and ``obsm['X_gears_anchor']`` (at
    ``anchor_weight=0`` only the latter, and no ``obsp`` graphs and no stitching diagnostics), and
    each cell's matched spots and their weights in its anchor, ``obsm['gears_anchor_spots']`` and
    ``obsm['gears_anchor_weights']`` (``(n, anchor_k)``, ``(n, 2 * anchor_k)`` with
    ``anchor_transport``; the spots are rows of the reference slide,
    whose coordinates ``uns['gears']['anchor']['spot_coords']`` keeps), which
    :func:`gearsx.tl.project_groups` sums into per-spot maps of the cells' groups.

    Notes
    -----
    Why the averaging (``smooth_k``): the geometry model is trained on ST spots, each the sum
    of several cells, and it places spots well, but single cells are dominated by their cell
    type: with raw cell embeddings the predicted within-patch distances barely correlate with
    the true ones, even when patches are cut from the true positions. Averaging over
    expression neighbours brings cells towards the spot domain and raised both the Spearman
    correlation and the edge ROC-AUC of the intrinsic layout on real data (see
    :ref:`gears-reconstruction`; figures in :doc:`/benchmarks`). The anchors are matched on the
    cells' own embeddings, so in anchored mode the averaging shapes only the intrinsic offsets.
    On a small query a fixed 50 averages away what tells the cells apart: on 60 and 120 cells of
    four data sets the intrinsic layout scored higher with one cell in twelve averaged than with
    50 on every set (Spearman +0.02 to +0.37), and within 0.006 of it on 500 cells; anchored
    layouts moved by at most 0.02 either way (see :doc:`/benchmarks`, small queries).

    When to anchor: a reference-anchored layout lives in the frame of a reference slide, so it can be
    drawn over it, and it uses the strongest signal there is when the cells come from the tissue the
    reference covers. When they do not (another region, another tissue), anchors would pull every
    cell into the reference's outline; ``anchor='auto'`` then keeps the intrinsic layout. It scores
    how similar the query's matches are between a shuffled null (each embedding dimension permuted
    across cells: 0) and the reference's own spots matched to each other (1)
    (:func:`gearsx.geometry.match_score`), and anchors from 0.5 up. See "When to anchor" in the docs.

    The layout composes with scanpy: ``sc.pp.neighbors(adata, use_rep="X_gears_spatial")``
    followed by ``sc.tl.leiden(adata)`` gives spatial communities of the reconstruction.

    Examples
    --------
    >>> import gearsx as gx
    >>> gx.tl.reconstruct(sc_adata, geo)  # doctest: +SKIP
    >>> sc_adata.obsm["X_gears_spatial"].shape  # doctest: +SKIP
    (10000, 2)
    """
    random_state = check_positive_int(random_state, name="random_state", minimum=0)
    from gearsx.geometry import best_overlaps, locality_graph, neighbor_average, random_walk_patches
    from gearsx.geometry._graph import check_jaccard

    from ._anchored import empty_cells, plan_anchor, query_expression
    from ._stitch import stitch

    check_key_added(key_added, owner="gx.tl.reconstruct")
    _check_anchor_arguments(
        anchor,
        reference_slide=reference_slide,
        anchor_k=anchor_k,
        anchor_expression_weight=anchor_expression_weight,
        anchor_temperature=anchor_temperature,
        anchor_transport=anchor_transport,
        anchor_weight=anchor_weight,
        anchor_distance_steps=anchor_distance_steps,
    )
    x = _checked_embedding(adata, model, use_rep, allow_unadapted=allow_unadapted, anchored=anchor is not None)
    client = resolve_client(client)
    if n_communities is not None:
        n_communities = check_positive_int(n_communities, name="n_communities")
    anchor_k = _checked_anchor_numbers(anchor_k, anchor_weight, anchor_temperature)
    given = {"n_patch": n_patch, "min_overlap": min_overlap, "n_neighbors": n_neighbors, "smooth_k": smooth_k}
    sizes = None
    if anchor is None or anchor_weight > 0:  # the intrinsic layout will be built: check its sizes before the match
        sizes = _checked_sizes(adata.n_obs, **given)
    else:  # perhaps not built: their types now, against the cells if it is
        for name, value in given.items():
            if value is not None:
                check_positive_int(value, name=name, minimum=_MIN_PATCH if name == "n_patch" else 1)
    anchor_distance_steps = check_positive_int(anchor_distance_steps, name="anchor_distance_steps", minimum=0)
    refine_steps = check_positive_int(refine_steps, name="refine_steps", minimum=0)
    coverage = check_positive_int(coverage, name="coverage")
    batch_size = check_positive_int(batch_size, name="batch_size")
    jaccard = check_jaccard(jaccard)
    clock = _StepClock()
    ref = model.reference() if anchor is not None else None  # once: it densifies the spots' expression
    expression, expression_weight, expression_note = query_expression(adata, ref, anchor_expression_weight, anchor)
    if anchor_transport and anchor is not None:
        _check_transport(expression, expression_note, anchor_expression_weight)
    empty = empty_cells(adata) if anchor is not None else None  # cells without a count: positions unknown
    plan = plan_anchor(
        x, ref, anchor=anchor, reference_slide=reference_slide, k=anchor_k, random_state=random_state,
        expression=expression, expression_weight=expression_weight, expression_note=expression_note,
        expression_default=anchor_expression_weight is None, temperature=anchor_temperature, empty=empty,
        transport=anchor_transport,
    )  # fmt: skip
    clock.lap("match")
    if not plan.anchored and sizes is None:  # anchor='auto' at weight 0 chose the intrinsic layout after all
        fix = (
            "anchor='reference', anchor_weight=0 would place them on the model's reference anyway, though they do "
            "not look like its tissue."
            if "match_score" in plan.record
            else "Anchoring needs a model that keeps its reference: retrain it, or load it with `adata=`."
        )
        sizes = _checked_sizes(adata.n_obs, **given, why=(f" ({plan.record['decision']}, so not anchored)", fix))
    adata = adata.copy() if copy else adata

    if plan.anchored and anchor_weight == 0:
        # The fusion at weight 0 returns the anchors whatever the intrinsic layout: skip steps 0-4.
        logger.info(
            "reconstruct: anchored at anchor_weight=0, so the intrinsic layout (steps 0-4) is skipped%s",
            "; client and n_communities are not used" if client is not None or n_communities is not None else "",
        )
        _write_anchors_only(
            adata, plan, key_added=key_added, distance_steps=anchor_distance_steps, random_state=random_state
        )
        clock.lap("fuse")
        graph_diag, patches, best_overlap = {}, [], None
        n_patch, min_overlap, smooth_k = (given[k] for k in ("n_patch", "min_overlap", "smooth_k"))  # not used
    else:
        n_patch, min_overlap, n_neighbors, smooth_k = sizes
        x = neighbor_average(x, smooth_k, random_state=random_state)
        clock.lap("average")
        graph, graph_diag = locality_graph(x, k=n_neighbors, jaccard=jaccard, random_state=random_state)
        clock.lap("graph")
        patches = random_walk_patches(
            graph, n_patch, coverage=coverage, min_overlap=min_overlap, prune=prune, random_state=random_state
        )
        logger.info(
            "reconstruct: %d cells, %d patches of %d (coverage %d), locality graph with %d component(s)",
            adata.n_obs,
            len(patches),
            n_patch,
            coverage,
            int(graph_diag.get("n_components", 1)),
        )
        clock.lap("cover")
        coords = model.predict_patches(
            x,
            patches,
            refine_steps=refine_steps,
            batch_size=batch_size,
            random_state=random_state,
            client=client,
            progress=progress,
        )
        clock.lap("predict")
        best_overlap, _ = best_overlaps(patches, adata.n_obs)
        stitch(
            adata,
            list(zip(patches, coords, strict=True)),
            key_added=key_added,
            n_communities=n_communities,
            client=client,
            random_state=random_state,
        )
        clock.lap("stitch")
        _write_anchored(
            adata, plan, patches, coords, key_added=key_added, weight=anchor_weight,
            distance_steps=anchor_distance_steps, random_state=random_state,
        )  # fmt: skip
        clock.lap("fuse")
    adata.uns[key_added]["reconstruct"] = {
        "params": {
            "use_rep": use_rep,
            "n_patch": n_patch,
            "min_overlap": min_overlap,
            "coverage": coverage,
            "prune": prune,
            "n_neighbors": n_neighbors,
            "jaccard": jaccard,
            "smooth_k": smooth_k,
            "anchor": "none" if anchor is None else anchor,
            "anchor_k": anchor_k,
            "anchor_expression_weight": anchor_expression_weight,
            "anchor_temperature": anchor_temperature,
            "anchor_transport": anchor_transport,
            "anchor_weight": anchor_weight,
            "anchor_distance_steps": anchor_distance_steps,
            **({"reference_slide": str(reference_slide)} if reference_slide is not None else {}),
            "refine_steps": refine_steps,
            "n_communities": n_communities,
            "random_state": random_state,
            "executor": "in-process" if client is None else f"dask {client.scheduler.address}",
            "version": __version__,
        },
        "graph": graph_diag,
        "seconds": clock.seconds,
        "n_patches": len(patches),
        **({} if best_overlap is None else {"median_best_overlap": float(np.median(best_overlap))}),
    }
    return adata if copy else None


class _StepClock:
    """Wall time of each step of a reconstruction (recorded in ``uns``, for users who need to know where it goes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._last, 3)
        self._last = now


def _checked_embedding(adata: AnnData, model, use_rep: str, *, allow_unadapted: bool, anchored: bool) -> np.ndarray:
    """Validate the model and the cells' embeddings (clear errors, nothing written); return the embeddings."""
    from gearsx.model import GEARS

    if not isinstance(model, GEARS):
        msg = f"`model` must be a trained gx.model.GEARS; got {type(model).__name__}."
        raise TypeError(msg)
    if not model.is_trained:
        msg = "`model` is not trained yet; call `model.train()` first (or load a trained model)."
        raise RuntimeError(msg)
    check_obsm_key(
        adata, use_rep, "use_rep", "embed the cells first: `gx.tl.fit_adapter(adata, encoder)` for scRNA-seq writes it"
    )
    if not allow_unadapted and Key.adapter not in adata.uns:
        msg = (
            f"`adata.uns[{Key.adapter!r}]` is missing: these embeddings were not adapted to the ST space. "
            "Run `gx.tl.fit_adapter(adata, encoder)` first, or pass allow_unadapted=True for held-out ST spots."
        )
        raise ValueError(msg)
    _check_same_encoder(adata, model, use_rep, anchored=anchored)
    x = model.check_embedding(adata.obsm[use_rep], name=f"`adata.obsm[{use_rep!r}]`")
    if len(x) > 1 and not np.ptp(x, axis=0).any():
        # nothing tells the cells apart: the stitch failed on a patch the user never passed, the anchors
        # put every cell at one point
        msg = (
            f"`adata.obsm[{use_rep!r}]` holds the same row for every cell: nothing in it tells the cells apart. "
            "Check how it was computed (`gx.tl.fit_adapter(adata, encoder)` writes it from the expression)."
        )
        raise ValueError(msg)
    return x


def _check_same_encoder(adata: AnnData, model, use_rep: str, *, anchored: bool) -> None:
    """Refuse embeddings from another encoder than the one whose ST embeddings trained ``model``.

    Two encoders of the same width embed into different spaces: the model would read the cells'
    embeddings as coordinates of a space it never saw, and the anchors would match them to spots of
    another space, with no error. Checked when both sides carry the encoder's fingerprint
    (:attr:`gearsx.model.SharedEncoder.fingerprint`, recorded by ``fit_encoder`` / ``fit_adapter``);
    when ``anchored``, the model's registered ST data (whose embeddings the anchors match) must
    still hold the embeddings it was trained on.
    """
    trained = model.train_params_.get("encoder_id")
    if not trained:
        return
    record, cells = Key.adapter, recorded_encoder_id(adata, Key.adapter, use_rep)
    if cells is None:  # held-out ST spots carry the encoder's own record
        record, cells = Key.encoder, recorded_encoder_id(adata, Key.encoder, use_rep)
    if cells is not None and cells != trained:
        msg = (
            f"`adata.obsm[{use_rep!r}]` comes from encoder {cells} (`uns[{record!r}]['encoder_id']`), but "
            f"`model` was trained on the ST embeddings of encoder {trained}: their spaces differ. Adapt the cells "
            "with the encoder that embedded the model's ST data (`gx.tl.fit_adapter(adata, encoder)`, where "
            f"`encoder.fingerprint == {trained!r}`), or train the model again on the current ST embeddings."
        )
        raise ValueError(msg)
    st = getattr(model, "adata", None) if anchored else None
    current = None if st is None else recorded_encoder_id(st, Key.encoder, model.setup_args.get("use_rep", ""))
    if current is not None and current != trained:
        msg = (
            f"The model's ST data were embedded again (encoder {current} in `uns[{Key.encoder!r}]`) after `model` "
            f"was trained on the embeddings of encoder {trained}; the anchors would match the cells to spots of "
            "another space. Train the model again (`model.train()`) after `fit_encoder`, or restore the embeddings "
            "it was trained on."
        )
        raise ValueError(msg)


def _check_anchor_arguments(anchor, **given) -> None:
    """Raise when ``anchor=None`` comes with arguments that only an anchored reconstruction reads.

    Intrinsic mode would ignore them, so a user who set ``anchor_k`` (say) and ``anchor=None`` would
    get a layout that their argument never touched.
    """
    if anchor is not None:
        return
    defaults = {
        "reference_slide": None,
        "anchor_k": None,
        "anchor_expression_weight": None,
        "anchor_temperature": TEMPERATURE,
        "anchor_transport": False,
        "anchor_weight": ANCHOR_WEIGHT,
        "anchor_distance_steps": ANCHOR_DISTANCE_STEPS,
    }
    unused = [name for name, default in defaults.items() if not _same(given[name], default)]
    if unused:
        msg = (
            f"anchor=None places the cells from the intrinsic geometry alone, which reads none of {unused}. "
            "Drop them, or pass anchor='reference' (or 'auto') to anchor the cells in the reference."
        )
        raise ValueError(msg)


def _same(value, default) -> bool:
    """Return whether an argument is its default (``None`` only equals ``None``)."""
    if value is None or default is None or isinstance(default, bool):
        return value is default
    return isinstance(value, numbers.Number) and not isinstance(value, bool) and value == default


def _check_transport(expression, expression_note: str, expression_weight) -> None:
    """Raise when ``anchor_transport=True`` lacks what it needs: POT, or the expression of both sides."""
    if expression_weight == 0:
        msg = (
            "anchor_transport=True transports the cells' expression onto the spots', but anchor_expression_weight=0 "
            "matches on the embedding alone; drop one of the two."
        )
        raise ValueError(msg)
    if expression is None:
        msg = f"anchor_transport=True needs the expression of both sides, but {expression_note}; pass anchor_transport=False."
        raise ValueError(msg)
    from gearsx.geometry._transport import require_pot

    require_pot()  # before the match, not after it


def _checked_anchor_numbers(anchor_k, anchor_weight, anchor_temperature) -> int | None:
    """Validate the anchoring numbers, which do not depend on the number of cells; return ``anchor_k``."""
    if anchor_k is not None:
        anchor_k = check_positive_int(anchor_k, name="anchor_k")
    check_nonnegative_number(anchor_weight, name="anchor_weight")
    if anchor_temperature is not None:
        check_positive_number(anchor_temperature, name="anchor_temperature", hint=" or None (equal weights)")
    return anchor_k


def _checked_sizes(
    n_obs: int, n_patch, min_overlap, n_neighbors, smooth_k, why: tuple[str, str] | None = None
) -> tuple[int, ...]:
    """Validate the intrinsic layout's sizes against the number of cells; return ``n_patch, min_overlap, n_neighbors, smooth_k``.

    Checked only when the run builds the intrinsic layout: an anchored run at ``anchor_weight=0``
    uses none of them and places any number of cells. ``why``: why the layout is built though the
    user asked for anchors alone (``anchor='auto'`` that did not anchor), and what to do about a
    query too small for it.
    """
    if n_obs < _MIN_PATCH:
        reason, fix = why or (
            "",
            "To place fewer cells, anchor them on the model's reference alone: anchor='reference', anchor_weight=0.",
        )
        msg = (
            f"The intrinsic layout needs at least {_MIN_PATCH} cells (the smallest patch); `adata` has {n_obs}"
            f"{reason}. {fix}"
        )
        raise ValueError(msg)
    n_patch = min(DEFAULT_N_PATCH, n_obs) if n_patch is None else n_patch
    n_patch = check_positive_int(n_patch, name="n_patch", minimum=_MIN_PATCH)
    if n_patch > n_obs:
        msg = (
            f"`n_patch`={n_patch} is larger than the data ({n_obs} cells); pass n_patch=None "
            f"(the default: one patch of all cells here) or a smaller n_patch."
        )
        raise ValueError(msg)
    if min_overlap is None:
        min_overlap = min(DEFAULT_MIN_OVERLAP, n_patch // 2)
    min_overlap = check_positive_int(min_overlap, name="min_overlap")
    if min_overlap >= n_patch:
        msg = (
            f"`min_overlap`={min_overlap} must be smaller than `n_patch`={n_patch}: neighbouring patches share "
            f"`min_overlap` cells; pass a smaller min_overlap (e.g. {max(1, n_patch // 6)}) or a larger n_patch."
        )
        raise ValueError(msg)
    n_neighbors = check_positive_int(n_neighbors, name="n_neighbors")
    if n_neighbors >= n_obs:
        msg = f"`n_neighbors`={n_neighbors} must be smaller than the number of cells ({n_obs})."
        raise ValueError(msg)
    if smooth_k is None:
        smooth_k = max(1, min(DEFAULT_SMOOTH_K, n_obs // SMOOTH_FRACTION))
    smooth_k = check_positive_int(smooth_k, name="smooth_k")
    if smooth_k >= n_obs:
        msg = f"`smooth_k`={smooth_k} must be smaller than the number of cells ({n_obs}); pass a smaller smooth_k."
        raise ValueError(msg)
    return n_patch, min_overlap, n_neighbors, smooth_k


def _remove_stale(entries: list, why: str) -> None:
    """Delete the ``(slot, key)`` entries an earlier run left: they would describe another layout than this run's."""
    for slot, key in entries:
        if key in slot:
            logger.info("removing %r of an earlier run (%s)", key, why)
            del slot[key]


def _write_anchors_only(adata: AnnData, plan, *, key_added: str, distance_steps: int, random_state: int) -> None:
    """Write an anchored run at ``anchor_weight=0``: the anchors spread to their expected distances, no intrinsic layout.

    Keys of an earlier run under ``key_added`` that describe an intrinsic layout (the stitched
    distances and connectivities, the intrinsic layout) are removed, so nothing left in ``adata``
    describes another layout than this one.
    """
    from ._anchored import apply_anchor

    layout, uncertainty = apply_anchor(
        plan, None, [], [], weight=0.0, distance_steps=distance_steps, random_state=random_state
    )
    obsm_key = Key.layout(key_added)
    _remove_stale(
        [(adata.obsm, Key.intrinsic(key_added)), (adata.obsp, Key.distances(key_added)),
         (adata.obsp, Key.connectivities(key_added))],
        "this run has no intrinsic layout",
    )  # fmt: skip
    if obsm_key in adata.obsm or key_added in adata.uns:
        logger.info("replacing existing %r", key_added)
    adata.obsm[obsm_key] = layout
    set_obs_rep(adata, plan.anchors, obsm=Key.anchors(key_added))
    _write_matches(adata, plan, key_added)
    adata.obs[Key.uncertainty(key_added)] = uncertainty
    write_record(adata, key_added, {"random_state": random_state, "intrinsic": "skipped (anchor_weight=0)"})
    adata.uns[key_added]["anchor"] = {**plan.record, "weight": 0.0}


def _write_matches(adata: AnnData, plan, key_added: str) -> None:
    """Write each cell's matched spots and their weights (``obsm``), for :func:`gearsx.tl.project_groups`."""
    adata.obsm[Key.anchor_spots(key_added)] = plan.spots
    adata.obsm[Key.anchor_weights(key_added)] = plan.spot_weights


def _write_anchored(
    adata: AnnData, plan, patches, coords, *, key_added: str, weight: float, distance_steps: int, random_state: int
) -> None:
    """Fuse the stitched layout with the anchors (when anchored) and write layout, uncertainty and record."""
    import scipy.sparse as sp

    from ._anchored import apply_anchor

    obsm_key = Key.layout(key_added)
    intrinsic = np.asarray(adata.obsm[obsm_key], dtype=np.float64)
    layout, uncertainty = apply_anchor(
        plan, intrinsic, patches, coords, weight=weight, distance_steps=distance_steps, random_state=random_state
    )
    if plan.anchored:
        set_obs_rep(adata, intrinsic, obsm=Key.intrinsic(key_added))
        set_obs_rep(adata, plan.anchors, obsm=Key.anchors(key_added))
        _write_matches(adata, plan, key_added)
        adata.obsm[obsm_key] = layout  # the stitched layout, now fused
        # stitched distances into reference units: the scale between the two layouts over the stitched edges
        dist = adata.obsp[Key.distances(key_added)]
        d = sp.triu(dist, k=1).tocoo()
        if d.nnz:
            lay = np.linalg.norm(layout[d.row] - layout[d.col], axis=1)
            intr = np.linalg.norm(intrinsic[d.row] - intrinsic[d.col], axis=1)
            adata.obsp[Key.distances(key_added)] = dist * float(np.median(lay) / max(np.median(intr), 1e-12))
    else:
        _remove_stale(
            [(adata.obsm, k(key_added)) for k in (Key.intrinsic, Key.anchors, Key.anchor_spots, Key.anchor_weights)],
            "not anchored",
        )
    adata.obs[Key.uncertainty(key_added)] = uncertainty
    adata.uns[key_added]["anchor"] = {**plan.record, "weight": weight}
