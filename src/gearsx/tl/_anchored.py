"""Reference anchoring for :func:`gearsx.tl.reconstruct`: decide, match, fuse, and measure uncertainty."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

from gearsx._anndata import check_finite_matrix, empty_rows
from gearsx._keys import Key
from gearsx._utils import as_rng, check_fraction
from gearsx.geometry import (
    expected_distance_layout,
    fuse_anchor,
    gene_agreement,
    match_reference,
    match_score,
    patch_residuals,
    shuffled,
)
from gearsx.geometry._anchor import EXPRESSION_WEIGHT, global_agreement, localisation, match_spread
from gearsx.geometry._transport import _row_entropy, transport_anchors

logger = logging.getLogger(__name__)

_MODES = ("auto", "reference", None)
#: ``anchor='auto'`` anchors when the match score (0: shuffled null, 1: the reference itself) reaches this.
AUTO_THRESHOLD = 0.5
#: Above this many query cells the decision (which reference slide, the match score against the shuffled
#: null) is taken on a seeded sample of this many cells; the anchors themselves are matched for every cell.
#: On 200,000 simulated cells the sampled score was within 0.001 of all cells' (0.8989-0.9000 over three
#: seeds against 0.8994), with the same slide and the same anchors, in 10 s instead of 33 s; at a million
#: cells the slide candidates and the null were four of the five full matches (match step 113 s -> 31 s).
DECISION_SAMPLE = 50_000
#: The shuffled null holds at least this many rows: a query of fewer cells has each embedding dimension's
#: values drawn with replacement into this many (:func:`~gearsx.geometry.shuffled`). A null of a few
#: cells' permutations has an unstable spread: on a toy reference, five cells' uncertainties came out 1.4-1.7
#: times those of the same cells in a query of 700, and 1.03-1.09 times with this null.
NULL_ROWS = 100
#: ``anchor_k=None``: this many matches per cell, or one less than a slide's spots when it has no more.
ANCHOR_K = 50
#: The decision (which reference slide, the match score) and each cell's chance that its matches are real
#: compare the mean similarity of the best ``min(anchor_k, DECISION_K)`` matches (the smallest
#: ``anchor_k`` of the candidate slides, so that every slide is judged on as many); the anchor itself may
#: weigh more. A cell's 50th match on a slide of 79 spots says little about whether the cell is real:
#: with the decision over all 50, the uncertainty's rank correlation with the error fell from 0.18
#: to 0.04 on the benchmark's MERFISH at ten-cell spots (over the best 20: 0.16).
DECISION_K = 20
#: Below this localisation an anchored run warns that single cells' positions carry little information.
WEAK_LOCALISATION = 0.25
#: An anchored run that weighs the expression warns when the query's genes co-vary this little like the
#: reference spots' (:func:`~gearsx.geometry.gene_agreement`) while both sides' gene-gene correlations are
#: measured with at least :data:`GENE_RELIABILITY`: the profiles may come from another technology, where
#: the expression view misleads. On the benchmark splits (seeds 0-2) whole queries of the reference's
#: platform scored 0.45-1.0 (with simulated capture differences 0.90-1.0), and Tasic's scRNA-seq against
#: the seqFISH section 0.04-0.09 at a reliability of 0.70-0.99 (any subset of 20 cells or more). Single sorted
#: populations of the reference's platform (148 cell classes and neuron clusters of MERFISH and seqFISH)
#: scored 0.09-1.0, but every one below 0.2 at a reliability of 0.31 at most; the 26 measured with a
#: reliability of 0.5 or more scored 0.25 or more (see :doc:`/anchoring`). At the default
#: ``anchor_expression_weight=None`` such a query is matched on the embedding alone (with a warning); a
#: weight given explicitly is kept, and the warning names ``0``.
GENE_AGREEMENT_LOW = 0.2
#: ... and the reliability both sides need before a low agreement is read as a difference of platform.
GENE_RELIABILITY = 0.5


@dataclass
class AnchorPlan:
    """What the anchoring step decided, before the intrinsic reconstruction runs."""

    anchored: bool
    record: dict = field(default_factory=dict)
    anchors: np.ndarray | None = None
    anchor_sd: np.ndarray | None = None
    #: ``(n, k)`` each cell's matched spots (rows of the reference slide) and their weights in its anchor;
    #: cells without a count weigh nothing (their matches say nothing about where they lie)
    spots: np.ndarray | None = None
    spot_weights: np.ndarray | None = None


def _cell_sd(
    match, coords: np.ndarray, similarity: np.ndarray, null_similarity: np.ndarray, empty: np.ndarray | None = None
) -> np.ndarray:
    """Per-cell anchor uncertainty (reference units): how far the cell may be from its anchor.

    A mixture of two answers, weighted by ``p``: how far the cell's mean match similarity
    (``similarity``: its best :data:`DECISION_K` matches in the embedding, found in the embedding alone) stands
    above that of shuffled queries matched the same way (``null_similarity``), as the normal
    distribution function of its distance from their mean in units of their SD. The anchors' own
    matches (``match``) may be chosen with the expression too; their embedding similarity is lower
    by construction and would not compare with the null. With probability ``p`` the matches are real
    and the cell lies among its matched spots
    (their RMS distance to the anchor, weighted as in the anchor); else it could be anywhere in the
    slide (the RMS distance of all its spots, ``coords``, to the anchor). So
    ``sqrt(p s_match^2 + (1 - p) s_slide^2)``. Real cells have ``p`` near 1 and keep the spread of
    their matches; cells whose matches are no better than noise move towards the slide's. On the
    benchmark's single-cell sets the matches' weighted spread ranked the cells' errors better than
    their spread inflated by how weak the matches are (see :doc:`/anchoring`).

    Cells without a single count (``empty``) get ``p = 0``: their centred profile is minus the mean
    profile, which matches real spots as well as any cell's, yet it carries no information on where
    the cell lies.
    """
    centre = coords.mean(0)
    sq = ((coords - centre) ** 2).sum(1)  # each spot's squared distance to the slide's centre
    a2 = ((match.anchors - centre) ** 2).sum(1)
    # the anchor is the matches' weighted mean, so their weighted mean square about it is E|p|^2 - |a|^2
    # (about the slide's centre, for precision): one number per match gathered, not its coordinates
    s_match = np.maximum((match.weights * sq[match.indices]).sum(1) - a2, 0.0)
    s_slide = a2 + float(sq.mean())
    null = np.asarray(null_similarity).mean(1)
    p = ndtr((np.asarray(similarity).mean(1) - null.mean()) / max(float(null.std()), 1e-12))
    if empty is not None:
        p = np.where(empty, 0.0, p)
    return np.sqrt(p * s_match + (1.0 - p) * s_slide)


def empty_cells(adata) -> np.ndarray | None:
    """Return which cells hold no count at all (``layers['counts']`` when present, else ``X``).

    ``None`` when there is no such matrix, or when every row is empty: then it is a placeholder
    (cells given by their embedding alone), not their expression.
    """
    x = adata.layers[Key.counts_layer] if Key.counts_layer in adata.layers else adata.X
    if x is None:
        return None
    empty = empty_rows(x)
    return empty if not empty.all() else None


def query_expression(adata, ref: dict | None, weight: float | None, anchor: str | None):
    """Return the query's expression for the anchors' matches, and the weight to give it.

    ``ref`` is the model's :meth:`~gearsx.model.GEARS.reference`. ``weight=None`` (default):
    :data:`gearsx.geometry._anchor.EXPRESSION_WEIGHT` when that reference keeps its
    spots' ``layers['gears_centered']`` and ``adata`` has the same layer with every reference
    gene, else ``0`` (embedding alone; the reason is recorded, and warned about when the query is
    anchored, by :func:`plan_anchor`). A number is used as given; above ``0`` it requires both, and
    a missing piece is an error naming it. Non-finite values in the query's layer are an error.
    Returns ``(expression or None, weight, reason)``; the expression is the layer itself when the
    genes are the same and in the same order, else its columns in the reference's gene order.
    """
    if weight is not None:
        check_fraction(weight, name="anchor_expression_weight")
    if anchor is None or weight == 0:
        return None, 0.0, "not used"
    layer = Key.centered_layer
    missing = None
    if ref is None or ref.get("expression") is None:
        missing = (
            f"the model's reference keeps no spot expression (its ST data had no layers[{layer!r}], "
            "or it was saved by an older gearsx)"
        )
    elif layer not in adata.layers:
        missing = f"`adata` has no layers[{layer!r}] (run gx.pp.mean_center_per_slide(adata, slide_key=None))"
    else:
        if not adata.var_names.is_unique:  # which column holds a reference gene would be a guess
            msg = "`adata` has duplicated var_names; run `adata.var_names_make_unique()` (or gx.pp.prepare) first."
            raise ValueError(msg)
        cols = adata.var_names.get_indexer(ref["genes"])
        if (cols < 0).any():
            missing = (
                f"`adata` lacks {int((cols < 0).sum())} of the reference's {len(cols)} genes "
                "(prepare both with gx.pp.prepare)"
            )
    if missing is not None:
        if weight is not None:
            msg = f"`anchor_expression_weight`={weight} needs the expression of both sides, but {missing}; pass 0 to match on the embedding alone."
            raise ValueError(msg)
        return None, 0.0, missing
    x = adata.layers[layer]
    if not np.array_equal(cols, np.arange(adata.n_vars)):
        x = x[:, cols]
    check_finite_matrix(
        x,
        f"adata.layers[{layer!r}]",
        fix="recompute it with gx.pp.mean_center_per_slide(adata, slide_key=None), or pass anchor_expression_weight=0",
    )
    return x, EXPRESSION_WEIGHT if weight is None else float(weight), "used"


def plan_anchor(
    x: np.ndarray,
    ref: dict | None,
    *,
    anchor: str | None,
    reference_slide: str | None,
    k: int | None,
    random_state: int,
    expression=None,
    expression_weight: float = 0.0,
    expression_note: str = "not used",
    expression_default: bool = False,
    temperature: float | None = None,
    empty: np.ndarray | None = None,
    transport: bool = False,
) -> AnchorPlan:
    """Match the query to the model's reference (``ref``, :meth:`gearsx.model.GEARS.reference`) and decide whether to anchor.

    The query is matched to every reference slide (or ``reference_slide``) in the embedding; the
    slide with the most similar matches gives the frame; ``k`` spots are matched per cell (``None``:
    :data:`ANCHOR_K`, on each slide of no more spots one less than its spots; a number: slides of
    no more than ``k`` spots are left out). ``anchor='auto'`` anchors when the query's
    :func:`~gearsx.geometry.match_score` (shuffled query: 0, the reference's own spots: 1) reaches
    ``0.5``. The anchors themselves come from matches that also weigh the expression
    (``expression``: the query's profiles in the order of the reference's genes) by
    ``expression_weight`` (:func:`~gearsx.geometry.match_reference`); the decision uses the
    embedding alone. ``expression_note`` (why the expression was or was not used) goes to the
    record of an anchored plan. ``temperature`` weighs each cell's matches in its anchor
    (:func:`~gearsx.geometry.match_reference`; ``None``: equal weights). Above
    :data:`DECISION_SAMPLE` cells, the slide and the score come from a sample of that many cells
    (seeded by ``random_state``) and only the anchors are matched for all cells. ``empty`` marks
    the cells without a single count (:func:`empty_cells`): their positions are unknown, and their
    uncertainty says so (see ``_cell_sd``). When the anchors weigh the expression, how alike the
    query's genes co-vary with the slide's spots is recorded (:func:`~gearsx.geometry.gene_agreement`).
    Below :data:`GENE_AGREEMENT_LOW` at a reliability of :data:`GENE_RELIABILITY` the query reads as
    measured by another technology: where ``expression_default`` (the user left the weight at its
    default), the anchors are then matched on the embedding alone and ``expression_note`` says why,
    else the given weight is kept and a warning names ``0``. ``transport``: where the anchors weigh the
    expression, weigh them with the barycentres of a balanced transport plan of the same profiles
    (:func:`~gearsx.geometry.transport_anchors`) by inverse variance (see :func:`_with_transport`);
    where the expression is not used (the switch above), the record says why it was not.
    """
    if anchor not in _MODES:
        msg = f"`anchor` must be 'auto', 'reference' or None; got {anchor!r}."
        raise ValueError(msg)
    if anchor is None:
        return AnchorPlan(anchored=False, record={"mode": "intrinsic", "decision": "anchor=None"})
    if len(x) < 2:  # one cell shuffled is itself: no null, so neither a decision nor an uncertainty
        msg = (
            f"Anchoring needs at least 2 cells; `adata` has {len(x)}. The decision and the uncertainty compare "
            "the cells' matches with those of the cells' profiles shuffled across cells, which one cell lacks; "
            "reconstruct it together with other cells of its sample."
        )
        raise ValueError(msg)
    if ref is None:
        if anchor == "reference":
            msg = "This GEARS model carries no reference spots (saved by an older gearsx); retrain or load it with `adata=`."
            raise ValueError(msg)
        logger.warning(
            "reconstruct: anchor='auto' left the cells unanchored: this GEARS model carries no reference spots "
            "(saved by an older gearsx), so the layout is intrinsic, in a frame of its own. Retrain the model or "
            "load it with `adata=` to anchor."
        )
        return AnchorPlan(anchored=False, record={"mode": "intrinsic", "decision": "the model has no reference"})
    names = list(ref["slide_names"])
    if reference_slide is not None and str(reference_slide) not in names:
        msg = f"`reference_slide`={reference_slide!r} is not a slide of the model's reference; slides: {names}."
        raise ValueError(msg)
    candidates = [names.index(str(reference_slide))] if reference_slide is not None else range(len(names))
    sizes = {c: int(np.count_nonzero(ref["slides"] == c)) for c in candidates}
    if k is None:  # the default: ANCHOR_K on each slide, capped by its spots (a slide needs more than k)
        ks = {c: min(ANCHOR_K, n - 1) for c, n in sizes.items() if n > 1}
    else:
        ks = {c: k for c, n in sizes.items() if n > k}
    if not ks and k is None:
        msg = f"Every candidate reference slide has fewer than 2 spots ({sizes}); anchoring needs more."
        raise ValueError(msg)
    if not ks:
        msg = f"No reference slide has more than {k} spots for `anchor_k`={k}; pass a smaller anchor_k."
        raise ValueError(msg)
    kd = min(DECISION_K, *ks.values())  # the matches the decision compares, the same on every slide (see DECISION_K)
    if k is None and kd < DECISION_K and len(ks) > 1:  # a small slide's cap, not the user's anchor_k
        small = [names[c] for c, kc in ks.items() if kc < DECISION_K]
        logger.warning(
            "reconstruct: reference slide(s) %s hold too few spots for %d matches per cell; every candidate "
            "slide is compared on its best %d. Pass `reference_slide=` to anchor on one slide.",
            small, DECISION_K, kd,
        )  # fmt: skip
    sample = x
    if len(x) > DECISION_SAMPLE:
        rows = np.sort(as_rng(random_state).choice(len(x), DECISION_SAMPLE, replace=False))
        sample = x[rows]
    best, slide_similarity = None, {}
    # the embedding-only matches give the anchors without the expression; with it the anchors are
    # matched again below, and these serve the decision alone (its DECISION_K matches, equal weights)
    candidate_temperature = temperature if expression_weight == 0 else None
    for c, kc in ks.items():
        sel = ref["slides"] == c
        m = match_reference(
            sample, ref["embedding"][sel], ref["coords"][sel], k=kc if expression_weight == 0 and sample is x else kd,
            temperature=candidate_temperature, random_state=random_state,
        )  # fmt: skip
        sim = float(np.median(m.similarity[:, :kd].mean(1)))
        slide_similarity[names[c]] = sim
        if best is None or sim > best[1]:
            best = (c, sim, m, sel)
    s, decision_similarity, match, sel = best
    k = ks[s]
    emb, coords = ref["embedding"][sel], ref["coords"][sel]
    # the null and the reference's own matches serve their similarities only: equal weights, no spread to measure
    null_rows = shuffled(sample, random_state, n_rows=NULL_ROWS)
    null = match_reference(null_rows, emb, coords, k=kd, temperature=None, random_state=random_state)
    own = match_reference(emb, emb, coords, k=kd, exclude_self=True, temperature=None, random_state=random_state)
    score = match_score(match.similarity[:, :kd], null.similarity, own.similarity)
    anchored = anchor == "reference" or score >= AUTO_THRESHOLD
    decision = (
        "anchor='reference'"
        if anchor == "reference"
        else f"match score {score:.3f} {'>=' if anchored else '<'} {AUTO_THRESHOLD}"
    )
    null_sim, ref_sim = (float(np.median(v.similarity.mean(1))) for v in (null, own))
    ref_expression = ref["expression"][sel] if anchored and expression_weight > 0 else None  # matches and check
    genes, switched = None, False
    if ref_expression is not None:  # checked before the anchors' match: the default weight depends on it
        genes = gene_agreement(expression, ref_expression, random_state=random_state)
        reliable = min(genes.query_reliability, genes.reference_reliability) >= GENE_RELIABILITY
        low = reliable and genes.agreement < GENE_AGREEMENT_LOW
        if low and expression_default:
            expression_weight, ref_expression, switched = 0.0, None, True  # the warning below says why
            expression_note = (
                f"the query's genes co-vary unlike the reference spots' (gene agreement {genes.agreement:.2f} < "
                f"{GENE_AGREEMENT_LOW} at a reliability of {genes.query_reliability:.2f}; queries of the reference's "
                "own platform scored 0.45-1.0 in our benchmarks): its expression reads as measured by another "
                "technology, where comparing profiles gene by gene misleads the anchors"
            )
        elif low:
            logger.warning(
                "reconstruct: the query's genes co-vary unlike the reference spots' (gene agreement %.2f, "
                "reliability %.2f; queries of the reference's own platform scored 0.45-1.0 in our benchmarks): "
                "its expression may have been measured by another technology, where comparing profiles gene by "
                "gene misleads the anchors. Try anchor_expression_weight=0 (the embedding alone) beside "
                "this run; see 'When to anchor' in the docs.",
                genes.agreement, genes.query_reliability,
            )  # fmt: skip
    # every cell's best matches in the embedding alone: what the null and the reference's own matches compare with
    similarity = match.similarity[:, :kd]
    if anchored and (sample is not x or switched):  # all cells; after the switch, at the anchors' k and weights
        embedding_only = expression_weight == 0
        match = match_reference(
            x, emb, coords, k=k if embedding_only else kd, temperature=temperature if embedding_only else None,
            random_state=random_state,
        )  # fmt: skip
        similarity = match.similarity[:, :kd]
    if ref_expression is not None:
        del match  # its similarities are kept; its indices and weights need not live through the next match
        match = match_reference(
            x, emb, coords, k=k, query_expression=expression, reference_expression=ref_expression,
            expression_weight=expression_weight, temperature=temperature, random_state=random_state,
        )  # fmt: skip
    if anchored and expression_note not in ("used", "not used"):
        choice = "anchor_expression_weight=0 to choose this explicitly"
        if switched:
            choice += f", or {EXPRESSION_WEIGHT} to weigh the expression anyway"
        logger.warning(
            "reconstruct: anchors matched on the embedding alone, without the expression view: %s. Pass %s.",
            expression_note,
            choice,
        )
    local = localisation(match_spread(coords, match.indices[:, :kd]), coords, kd, random_state)
    if anchored and local < WEAK_LOCALISATION:
        logger.warning(
            "reconstruct: the cells' matched spots are barely localised (localisation %.2f; 0 = scattered like "
            "random spots): single cells' anchored positions carry little information, averages over many cells "
            "(a cell type's mean position) more. See `uns['gears']['anchor']` and 'When to anchor' in the docs.",
            local,
        )
    record = {
        "mode": "reference" if anchored else "intrinsic",
        "decision": decision,
        "slide": names[s],
        # the frame of the anchored coordinates: gx.pl.reconstruction(reference=) draws the spots from it
        "spatial_key": str(ref.get("spatial_key", Key.spatial)),
        "match_score": score,
        "similarity": decision_similarity,
        # two arrays, not a dict keyed by slide: a slide name may hold '/', which h5ad reads back as nesting
        "candidate_slides": np.array(list(slide_similarity), dtype=object),
        "slide_similarity": np.array(list(slide_similarity.values())),
        "null_similarity": null_sim,
        "reference_similarity": ref_sim,
        "localisation": local,
        "anchor_k": k,
        "decision_k": kd,
        "temperature": "none" if temperature is None else float(temperature),
        "expression_weight": float(expression_weight) if anchored else 0.0,
        **({"expression": expression_note} if anchored else {}),
        **(
            {"gene_agreement": genes.agreement, "gene_reliability": genes.query_reliability}
            if genes is not None
            else {}
        ),
        "decision_cells": len(sample),
        "n_empty": int(np.count_nonzero(empty)) if empty is not None else 0,
    }
    logger.info("reconstruct: %s mode (%s; reference slide %r)", record["mode"], decision, names[s])
    if not anchored:  # the layout changes frame: not a decision to leave at info level
        logger.warning(
            "reconstruct: anchor='auto' left the cells unanchored (match score %.2f < %s): the layout is "
            "intrinsic, in a frame of its own, not the reference's. If the cells come from the reference's "
            "tissue (a sorted population or a single cell type can score low), pass anchor='reference'; "
            "see 'When to anchor' in the docs.",
            score, AUTO_THRESHOLD,
        )  # fmt: skip
    if len(slide_similarity) > 1:
        runner_up = max((v, n) for n, v in slide_similarity.items() if n != names[s])
        logger.info(
            "reconstruct: reference slide %r matched the cells with median similarity %.4f, the next best (%r) "
            "%.4f; pass `reference_slide=` to choose the slide yourself.",
            names[s], decision_similarity, runner_up[1], runner_up[0],
        )  # fmt: skip
    if not anchored:  # the sample's matches would not describe every cell
        return AnchorPlan(anchored=False, record=record)
    sd = _cell_sd(match, coords, similarity, null.similarity, empty)
    anchors, spots, weights = match.anchors, match.indices, match.weights
    if transport and ref_expression is not None:
        anchors, sd, spots, weights, record["transport"] = _with_transport(
            match, sd, expression, ref_expression, coords, empty=empty, random_state=random_state
        )
    elif transport:  # the expression view was switched off above: so is its transport
        record["transport"] = f"not used: {expression_note}"
    record["spot_coords"] = coords  # the matched spots' positions: how gx.tl.project_groups finds them again
    if ref.get("slide_key") is not None:  # and the slide's column, where the model has several slides
        record["slide_key"] = str(ref["slide_key"])
    weights = weights.astype(np.float32)
    if empty is not None:
        weights[empty] = 0.0
    return AnchorPlan(
        anchored=True, record=record, anchors=anchors, anchor_sd=sd, spots=spots.astype(np.int32), spot_weights=weights
    )


def _with_transport(match, sd, expression, ref_expression, coords, *, empty, random_state):
    """Weigh the matches' anchors with a balanced transport plan's barycentres by inverse variance.

    The plan (:func:`~gearsx.geometry.transport_anchors`) moves the query's profiles onto the spots'
    with both marginals uniform, at the mean entropy of the matches' own weights (the cells without
    a count left out of that mean). Each cell's two positions are weighed by the inverse of their
    variances, ``sd^2`` (the matches' uncertainty, ``_cell_sd``) and the squared spread of its row
    of the plan; the combined ``sd`` is ``1 / sqrt(1 / sd^2 + 1 / spread^2)``. Cells without a
    count keep their matches' anchor and ``sd``.

    The blended anchor is the barycentre of a mixture: the matches' weights times the matches' share
    ``w_match / (w_match + w_plan)``, and the plan's row times the rest. That mixture is what each
    cell's spots and weights hold, so that :func:`gearsx.tl.project_groups` sums where the anchor
    comes from: the ``k`` matches and the plan's ``k`` heaviest spots (renormalised; a spot can be
    in both), ``2k`` columns. Returns ``(anchors, sd, spots, weights, record)``.
    """
    keep = np.ones(len(sd), dtype=bool) if empty is None else ~empty
    # one match per cell (anchor_k=1) holds no entropy: the plan then goes as sharp as it can
    target = max(_row_entropy(match.weights[keep]), 1e-6)
    plan = transport_anchors(
        expression, ref_expression, coords, target_entropy=target, top_k=match.indices.shape[1],
        random_state=random_state,
    )  # fmt: skip
    scale = float(np.sqrt(((coords - coords.mean(0)) ** 2).sum(1).mean()))
    floor = 1e-9 * max(scale, 1e-300)  # a plan's row on one spot: its position counts, within reason
    w_match = 1.0 / np.maximum(sd, floor) ** 2
    w_plan = np.where(keep, 1.0 / np.maximum(plan.spread, floor) ** 2, 0.0)
    total = w_match + w_plan
    anchors = (match.anchors * w_match[:, None] + plan.anchors * w_plan[:, None]) / total[:, None]
    share = (w_match / total)[:, None]
    spots = np.hstack([match.indices, plan.spots])
    weights = np.hstack([match.weights * share, plan.spot_weights * (1.0 - share)])
    record = {
        "epsilon": plan.epsilon,
        "entropy": plan.entropy,
        "target_entropy": target,
        "n_cells_solved": plan.n_solved,
        "median_plan_share": float(np.median((w_plan / total)[keep])) if keep.any() else 0.0,
    }
    return anchors, 1.0 / np.sqrt(total), spots, weights, record


def apply_anchor(
    plan: AnchorPlan,
    intrinsic: np.ndarray | None,
    patches: list,
    patch_coords: list,
    *,
    weight: float,
    distance_steps: int,
    random_state: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse the intrinsic layout with the anchors (when anchored), spread it to the expected distances, and measure uncertainty.

    Anchored: the fusion (:func:`gearsx.geometry.fuse_anchor`, each anchor's confidence from its
    ``anchor_sd``, how far the cell may be from its anchor, see ``_cell_sd``) starts
    :func:`gearsx.geometry.expected_distance_layout` (``distance_steps`` steps; ``0``: the fused
    layout), which moves the cells so that their distances match those expected from the anchors
    and their ``anchor_sd``, back in the anchors' frame. The uncertainty is then
    ``sqrt(anchor_sd^2 + |x - a|^2 + (share * residual)^2)``: the expected squared distance of the
    cell from its position ``x`` when it lies around its anchor ``a`` with that spread, plus how far
    the patches that predicted it disagree with the final layout
    (:func:`gearsx.geometry.patch_residuals`), scaled by ``share = weight / (1 + weight)``, the
    intrinsic layout's part in the fused position (about 0.09 at the default ``anchor_weight``
    0.1); all in reference units. ``intrinsic=None`` (an anchored run at ``weight=0``, which
    skips the intrinsic reconstruction): the fusion's answer at that weight, the anchors
    themselves, and no patch term, as the share is 0. Without an anchor: the intrinsic layout and
    its residual alone (layout units).
    """
    if not plan.anchored:
        return intrinsic, patch_residuals(patches, patch_coords, intrinsic)
    sd = plan.anchor_sd
    confidence = 1.0 / (1.0 + (sd / max(float(np.median(sd)), 1e-12)) ** 2)
    if intrinsic is None:
        layout = plan.anchors
    else:
        plan.record["global_agreement"] = global_agreement(intrinsic, plan.anchors)
        layout = fuse_anchor(intrinsic, plan.anchors, confidence, weight=weight)
    layout = expected_distance_layout(
        layout, plan.anchors, sd, confidence, n_steps=distance_steps, random_state=random_state
    )
    var = sd**2 + ((layout - plan.anchors) ** 2).sum(1)
    if intrinsic is not None:
        var += (weight / (1.0 + weight) * patch_residuals(patches, patch_coords, layout)) ** 2
    return layout, np.sqrt(var)
