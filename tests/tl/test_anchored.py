"""Reference-anchored reconstruction: known answers for the fusion, the uncertainty and the decision."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import gearsx as gx


def _planted(n=3000, seed=0):
    """Truth in the unit square; an anchor that is globally right but locally noisy (about 4 cell
    spacings); an intrinsic layout that is locally right (the shape of every neighbourhood, jitter of
    about one local cell spacing) but globally bent: its local scale grows threefold across the tissue,
    its rows curve, and it sits in another pose and scale (the distortions a stitch accumulates)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(size=(n, 2))
    stretch = np.exp(1.1 * xy[:, 0])
    bent = np.c_[stretch, stretch * xy[:, 1] + 0.8 * xy[:, 0] ** 2]
    bent = bent + rng.normal(scale=0.02, size=xy.shape) * stretch[:, None]
    bent = bent @ np.array([[0.0, 1.0], [-1.0, 0.0]]) * 7 + 3
    anchors = xy + rng.normal(scale=0.08, size=xy.shape)
    return xy, anchors, bent


def test_fusion_beats_anchor_and_intrinsic_alone():
    xy, anchors, bent = _planted()
    # The intrinsic offsets count as far as they agree locally with the anchors; here, with anchors
    # four cell spacings noisy, that agreement is modest, and a weight of 30 lets the locally right
    # layout through (the default, 1, is what the real-data benchmarks favour).
    fused = gx.geometry.fuse_anchor(bent, anchors, np.ones(len(xy)), weight=30)
    s = {name: gx.metrics.evaluate_geometry(v, xy) for name, v in (("a", anchors), ("i", bent), ("f", fused))}
    # global layout: better than either source
    assert s["f"]["spearman"] > max(s["a"]["spearman"], s["i"]["spearman"]) + 0.05
    assert s["f"]["stress1"] < min(s["a"]["stress1"], s["i"]["stress1"])
    # local structure: far better than the anchors and better than the intrinsic layout, whose
    # drifting local scale the anchors' frame corrects
    assert s["f"]["edge_auc"] > s["a"]["edge_auc"] + 0.03
    assert s["f"]["edge_auc"] > s["i"]["edge_auc"] + 0.001
    # it lives in the anchors' frame: no alignment needed to be close to the truth
    assert np.abs(fused - xy).mean() < np.abs(anchors - xy).mean()
    # the default weight already beats the anchors, globally and locally
    default = gx.metrics.evaluate_geometry(gx.geometry.fuse_anchor(bent, anchors, np.ones(len(xy))), xy)
    assert default["spearman"] > s["a"]["spearman"] + 0.03
    assert default["edge_auc"] > s["a"]["edge_auc"] + 0.02
    # weight 0 is the anchor itself
    np.testing.assert_allclose(gx.geometry.fuse_anchor(bent, anchors, np.ones(len(xy)), weight=0), anchors)


@pytest.mark.parametrize("pose", ["rotated", "reflected", "shrunk"])
def test_fusion_does_not_depend_on_the_intrinsic_pose(pose):
    # the intrinsic layout's rotation, handedness and scale are arbitrary: the fusion must not see them
    xy, anchors, bent = _planted(n=1500)
    theta = 2.0
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    posed = {"rotated": bent @ rot, "reflected": bent * [1.0, -1.0], "shrunk": 0.01 * bent - 5}[pose]
    ref = gx.geometry.fuse_anchor(bent, anchors, np.ones(len(xy)))
    np.testing.assert_allclose(gx.geometry.fuse_anchor(posed, anchors, np.ones(len(xy))), ref, atol=1e-5)


def test_confident_anchors_win_over_unconfident_ones():
    xy, anchors, bent = _planted(n=1500)
    bad = np.arange(0, 1500, 10)
    anchors = anchors.copy()
    anchors[bad] = np.random.default_rng(1).uniform(size=(len(bad), 2))  # wrong anchors ...
    conf = np.ones(1500)
    conf[bad] = 0.01  # ... that the confidence flags
    flagged = gx.geometry.fuse_anchor(bent, anchors, conf)
    blind = gx.geometry.fuse_anchor(bent, anchors, np.ones(1500))
    assert np.abs(flagged[bad] - xy[bad]).mean() < 0.75 * np.abs(blind[bad] - xy[bad]).mean()


def test_match_reference_anchors_and_spread():
    rng = np.random.default_rng(0)
    freq = rng.normal(size=(2, 8)) / 3
    spots = rng.uniform(0, 10, size=(800, 2))
    emb = np.c_[np.sin(spots @ freq), np.cos(spots @ freq)]  # an embedding that identifies position
    cells = rng.uniform(1, 9, size=(200, 2))
    q = np.c_[np.sin(cells @ freq), np.cos(cells @ freq)]
    m = gx.geometry.match_reference(q, emb, spots, k=10)
    assert np.median(np.linalg.norm(m.anchors - cells, axis=1)) < 0.5
    own = gx.geometry.match_reference(emb, emb, spots, k=10, exclude_self=True)
    assert not (own.indices == np.arange(800)[:, None]).any()
    null = gx.geometry.match_reference(gx.geometry.shuffled(q), emb, spots, k=10)
    # the query is as similar to the reference as the reference to itself; noise is not
    assert gx.geometry.match_score(m.similarity, null.similarity, own.similarity) > 0.8
    noise = gx.geometry.match_reference(rng.normal(size=q.shape), emb, spots, k=10)
    assert gx.geometry.match_score(noise.similarity, null.similarity, own.similarity) < 0.2
    # shuffling keeps every column's values
    sh = gx.geometry.shuffled(q, random_state=1)
    np.testing.assert_allclose(np.sort(sh, 0), np.sort(q, 0))
    assert not np.allclose(sh, q)


def _reference_and_query(seed=0, n_spots=900, n_cells=700):
    """A reference whose embedding identifies position, and single cells of the same tissue."""
    rng = np.random.default_rng(seed)
    freq = rng.normal(size=(2, 8)) / 3

    def embed(p):
        return np.c_[np.sin(p @ freq), np.cos(p @ freq)].astype(np.float32)

    spots = rng.uniform(0, 10, size=(n_spots, 2))
    st = ad.AnnData(np.zeros((n_spots, 1), dtype=np.float32))
    st.obsm["spatial"] = spots
    st.obsm["X_gears"] = embed(spots) + 0.05 * rng.normal(size=(n_spots, 16)).astype(np.float32)
    st.obs["slide"] = pd.Categorical(["s0"] * n_spots)
    cells_xy = rng.uniform(0, 10, size=(n_cells, 2))
    sc = ad.AnnData(np.zeros((n_cells, 1), dtype=np.float32))
    sc.obsm["X_gears"] = embed(cells_xy) + 0.15 * rng.normal(size=(n_cells, 16)).astype(np.float32)
    sc.obsm["spatial_gt"] = cells_xy
    return st, sc


@pytest.fixture(scope="module")
def toy_model():
    st, _ = _reference_and_query()
    geo = gx.model.GEARS(st, slide_key="slide", n_out=8, dim=32, n_inducing=8, n_context_blocks=1, n_generator_blocks=1)
    geo.train(max_epochs=2, n_batches=4, batch_size=2, n_min=64, n_max=128, validation=None, progress=False)
    return geo


_FAST = {"n_patch": 128, "min_overlap": 24, "smooth_k": 5, "allow_unadapted": True, "progress": False}


def test_anchored_reconstruction_lives_in_the_reference_frame(toy_model):
    _, sc = _reference_and_query()
    gx.tl.reconstruct(sc, toy_model, anchor="reference", **_FAST)
    rec, truth = sc.obsm["X_gears_spatial"], sc.obsm["spatial_gt"]
    rec_anchor = sc.uns["gears"]["anchor"]
    assert rec_anchor["mode"] == "reference"
    # anchor_k=None: 50 matches on this 900-spot slide, recorded where it was used
    assert (rec_anchor["anchor_k"], sc.uns["gears"]["reconstruct"]["params"]["anchor_k"]) == (50, None)
    # no alignment: the coordinates are the reference's
    assert np.median(np.linalg.norm(rec - truth, axis=1)) < 1.0
    assert gx.metrics.evaluate_geometry(rec, truth)["spearman"] > 0.8
    assert {"X_gears_intrinsic", "X_gears_anchor"} <= set(sc.obsm)
    unc = sc.obs["gears_uncertainty"].to_numpy()
    assert np.isfinite(unc).all()
    assert (unc > 0).all()


def test_anchored_layout_spreads_to_the_expected_distances(toy_model):
    """The last step of an anchored run: the fused layout moved towards the expected distances (steps 0: not moved)."""
    _, fused = _reference_and_query()
    gx.tl.reconstruct(fused, toy_model, anchor="reference", anchor_distance_steps=0, **_FAST)
    _, spread = _reference_and_query()
    gx.tl.reconstruct(spread, toy_model, anchor="reference", **_FAST)
    assert spread.uns["gears"]["reconstruct"]["params"]["anchor_distance_steps"] == 3
    np.testing.assert_array_equal(fused.obsm["X_gears_anchor"], spread.obsm["X_gears_anchor"])
    truth = fused.obsm["spatial_gt"]
    before = gx.metrics.evaluate_geometry(fused.obsm["X_gears_spatial"], truth)
    after = gx.metrics.evaluate_geometry(spread.obsm["X_gears_spatial"], truth)
    assert after["stress1"] < before["stress1"]
    # still in the reference frame: no farther from the anchors than the spread layout's own best fit
    moved = np.linalg.norm(spread.obsm["X_gears_spatial"] - spread.obsm["X_gears_anchor"], axis=1)
    assert np.median(moved) < np.median(np.linalg.norm(truth - truth.mean(0), axis=1))
    bad = fused.copy()
    del bad.uns["gears"]
    with pytest.raises(ValueError, match="anchor_distance_steps"):
        gx.tl.reconstruct(bad, toy_model, anchor="reference", anchor_distance_steps=-1, **_FAST)
    assert "gears" not in bad.uns  # untouched


def test_anchors_alone_skip_the_intrinsic_reconstruction_and_match_the_fusion_at_weight_zero(
    toy_model, monkeypatch, tmp_path
):
    """``anchor_weight=0``: the fusion returns the anchors, so no patch is predicted; same layout and uncertainty."""
    _, sc = _reference_and_query()
    near = gx.tl.reconstruct(sc, toy_model, anchor="reference", anchor_weight=1e-9, copy=True, **_FAST)
    # a run that stitched: its stitched keys describe another layout and must not survive
    gx.tl.reconstruct(sc, toy_model, anchor="reference", **_FAST)
    assert {"gears_distances", "gears_connectivities"} <= set(sc.obsp)

    def no_patches(*args, **kwargs):
        msg = "patches were predicted"
        raise AssertionError(msg)

    monkeypatch.setattr(type(toy_model), "predict_patches", no_patches)
    gx.tl.reconstruct(sc, toy_model, anchor="reference", anchor_weight=0, **_FAST)
    np.testing.assert_allclose(sc.obsm["X_gears_anchor"], near.obsm["X_gears_anchor"])
    scale = float(np.abs(near.obsm["X_gears_spatial"]).max())
    np.testing.assert_allclose(sc.obsm["X_gears_spatial"], near.obsm["X_gears_spatial"], atol=1e-5 * scale)
    np.testing.assert_allclose(sc.obs["gears_uncertainty"], near.obs["gears_uncertainty"], rtol=1e-5)
    assert not {"gears_distances", "gears_connectivities"} & set(sc.obsp)
    assert "X_gears_intrinsic" not in sc.obsm
    rec = sc.uns["gears"]
    assert (rec["anchor"]["weight"], rec["reconstruct"]["n_patches"]) == (0.0, 0)
    assert rec["reconstruct"]["params"]["anchor_weight"] == 0
    assert set(rec["reconstruct"]["seconds"]) == {"match", "fuse"}
    with pytest.raises(KeyError, match="anchor_weight"):
        gx.pl.stitching_diagnostics(sc, show=False)
    sc.write_h5ad(tmp_path / "anchors.h5ad")  # the record of a run without a graph is storable
    back = ad.read_h5ad(tmp_path / "anchors.h5ad")
    assert back.uns["gears"]["params"]["intrinsic"] == "skipped (anchor_weight=0)"
    np.testing.assert_array_equal(back.obsm["X_gears_spatial"], sc.obsm["X_gears_spatial"])
    # a query auto does not anchor still gets its intrinsic layout at weight 0
    other = sc.copy()
    other.obsm["X_gears"] = np.random.default_rng(5).normal(size=other.obsm["X_gears"].shape).astype(np.float32)
    with pytest.raises(AssertionError, match="patches were predicted"):
        gx.tl.reconstruct(other, toy_model, anchor="auto", anchor_weight=0, **_FAST)


def test_a_few_cells_are_placed_on_the_anchors_alone_and_the_intrinsic_layout_says_how(toy_model):
    """Fewer cells than the smallest patch: anchored at weight 0 they are placed; a layout needing patches says how."""
    _, sc = _reference_and_query()
    full = gx.tl.reconstruct(sc, toy_model, anchor="reference", anchor_weight=0, copy=True, **_FAST)
    few = sc[:5].copy()
    gx.tl.reconstruct(few, toy_model, anchor="reference", anchor_weight=0, allow_unadapted=True, progress=False)
    # each cell's anchor is its own matches': the same as among 700 cells (up to the seeded similarity spread)
    np.testing.assert_allclose(few.obsm["X_gears_anchor"], full.obsm["X_gears_anchor"][:5], atol=0.05)
    err = np.linalg.norm(few.obsm["X_gears_spatial"] - sc.obsm["spatial_gt"][:5], axis=1)
    assert np.median(err) < 1.0  # on a 10 x 10 slide; a random spot lies about 5 away
    np.testing.assert_allclose(few.obs["gears_uncertainty"], full.obs["gears_uncertainty"][:5], rtol=0.25)
    assert few.uns["gears"]["reconstruct"]["params"]["n_patch"] is None  # not used, not invented
    for kwargs in ({"anchor": None}, {"anchor": "reference"}):  # both build the intrinsic layout
        with pytest.raises(ValueError, match="at least 16 cells .* anchor='reference', anchor_weight=0"):
            gx.tl.reconstruct(few.copy(), toy_model, allow_unadapted=True, progress=False, **kwargs)
    scrambled = sc[:5].copy()  # no earlier result: the refusal must write nothing
    scrambled.obsm["X_gears"] = np.random.default_rng(1).normal(size=(5, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="has 5 \\(match score .* so not anchored\\)\\. anchor='reference'"):
        gx.tl.reconstruct(scrambled, toy_model, anchor="auto", anchor_weight=0, allow_unadapted=True)
    with pytest.raises(ValueError, match="`n_patch` must be an integer >= 16"):  # unused, still checked
        gx.tl.reconstruct(few.copy(), toy_model, anchor="reference", anchor_weight=0, n_patch=3, allow_unadapted=True)
    with pytest.raises(ValueError, match="at least 2 cells"):  # one cell has no shuffled null
        gx.tl.reconstruct(sc[:1].copy(), toy_model, anchor="reference", anchor_weight=0, allow_unadapted=True)
    assert "X_gears_spatial" not in scrambled.obsm


def test_a_null_of_a_few_rows_is_drawn_from_their_marginals_into_more():
    """``shuffled(n_rows=)``: each column's values only, independent across columns; unchanged above ``n_rows``."""
    x = np.arange(15.0).reshape(5, 3) * np.array([1.0, 100.0, 10_000.0])
    null = gx.geometry.shuffled(x, random_state=0, n_rows=4000)
    assert null.shape == (4000, 3)
    for j in range(3):  # every column holds its own values, each drawn about equally often
        values, counts = np.unique(null[:, j], return_counts=True)
        np.testing.assert_array_equal(values, x[:, j])
        assert counts.min() > 700
    rows = {tuple(r) for r in null / np.array([1.0, 100.0, 10_000.0])}
    assert len(rows) == 125  # the columns are drawn independently: every combination of 5 x 5 x 5 occurs
    np.testing.assert_array_equal(gx.geometry.shuffled(x, random_state=3, n_rows=5), gx.geometry.shuffled(x, 3))
    with pytest.raises(ValueError, match="no rows"):
        gx.geometry.shuffled(x[:0], n_rows=10)
    with pytest.raises(ValueError, match="`n_rows` must be an integer >= 1"):
        gx.geometry.shuffled(x, n_rows=0)


def test_anchor_uncertainty_mixes_the_matches_spread_and_the_slides_by_the_null():
    """Known answers: real matches keep their weighted spread; matches like the null's move towards the slide's."""
    from gearsx.geometry import AnchorMatch
    from gearsx.tl._anchored import _cell_sd

    coords = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 6.0], [4.0, 6.0]])
    idx = np.array([[0, 1], [0, 1], [2, 3]])
    weights = np.array([[0.75, 0.25], [0.5, 0.5], [0.5, 0.5]])
    anchors = np.einsum("nk,nkd->nd", weights, coords[idx])
    null = np.array([[0.1, 0.1], [0.3, 0.3]])  # shuffled cells' mean similarities: 0.1 and 0.3 (mean 0.2, SD 0.1)
    sim = np.array([[0.9, 0.9], [0.9, 0.9], [0.2, 0.2]])  # 7 null SDs above, 7 above, at the null's mean
    match = AnchorMatch(indices=idx, similarity=sim, anchors=anchors, weights=weights, reference_coords=coords)
    sd = _cell_sd(match, coords, sim, null)
    # cell 0: anchor (0.5, 0); spots at 0.5 (weight 3/4) and 1.5 (1/4): sqrt(0.75 * 0.25 + 0.25 * 2.25)
    np.testing.assert_allclose(sd[0], np.sqrt(0.75), rtol=1e-9)
    np.testing.assert_allclose(sd[1], 1.0, rtol=1e-9)  # equal weights, spots 1 from the anchor
    # cell 2 (p = 1/2): anchor (2, 6), its spots 2 away; all four spots' mean square distance to it is 21
    np.testing.assert_allclose(sd[2], np.sqrt(0.5 * 4 + 0.5 * 21), rtol=1e-9)


def test_uncertainty_compares_the_embedding_matches_with_the_null_whatever_chose_the_anchors():
    """The null is matched in the embedding alone; so must be what it is compared with.

    The query's expression here points every cell to the mirror image of its place, so the anchors
    (expression weight 1) sit among tight matches whose embedding is unlike the cell's. The cells'
    own embedding matches are excellent, so the matches count as real (p near 1) and the uncertainty
    is the anchors' matches' small spread, not the slide's. Comparing the anchors' matches' embedding
    similarity with the null instead took them for noise (1.3 times the slide's RMS radius here,
    against 0.1). The decision and its record do not depend on the expression either.
    """
    from gearsx.tl._anchored import plan_anchor

    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(30.0), np.arange(30.0)), -1).reshape(-1, 2)

    def profile(xy):  # a smooth code of position
        f = np.arange(1, 5)[None, :] / 10
        return np.hstack([np.cos(xy[:, :1] * f), np.sin(xy[:, :1] * f), np.cos(xy[:, 1:] * f), np.sin(xy[:, 1:] * f)])

    cells = rng.uniform(0, 29, size=(400, 2))
    mirrored = np.c_[29 - cells[:, 0], cells[:, 1]]
    ref = {
        "slide_names": ["s0"], "slides": np.zeros(len(grid), dtype=int), "coords": grid,
        "embedding": profile(grid) - profile(grid).mean(0), "expression": profile(grid) - profile(grid).mean(0),
    }  # fmt: skip
    query = profile(cells) - profile(grid).mean(0) + rng.normal(scale=0.01, size=(400, 16))
    expression = profile(mirrored) - profile(grid).mean(0)
    kw = {"anchor": "reference", "reference_slide": None, "k": 8, "random_state": 0}
    plan = plan_anchor(query, ref, expression=expression, expression_weight=1.0, **kw)
    np.testing.assert_allclose(plan.anchors[:, 0], mirrored[:, 0], atol=1.5)  # the anchors followed the expression
    radius = np.sqrt(((grid - grid.mean(0)) ** 2).sum(1).mean())
    assert np.median(plan.anchor_sd) < 0.15 * radius  # k = 8 grid spots: about one spacing
    plain = plan_anchor(query, ref, **kw)
    for key in ("similarity", "null_similarity", "reference_similarity", "match_score"):
        assert plan.record[key] == plain.record[key]


def _grid(n: int, offset: float = 0.0) -> np.ndarray:
    """``n x n`` spots one unit apart, from ``offset``."""
    return np.stack(np.meshgrid(np.arange(n) + offset, np.arange(n) + offset), -1).reshape(-1, 2)


def _waves(xy: np.ndarray) -> np.ndarray:
    """A 12-d profile that changes smoothly with position: sines and cosines of each coordinate."""
    f = np.arange(1, 4)[None, :] / 4
    return np.hstack([np.cos(xy[:, :1] * f), np.sin(xy[:, :1] * f), np.cos(xy[:, 1:] * f), np.sin(xy[:, 1:] * f)])


def test_default_anchor_k_is_capped_by_a_small_slide(caplog):
    """``anchor_k=None`` takes 50 matches, or one less than a slide's spots; a number is used as given.

    Two slides of one wave field: a small one (36 spots, the field's region from 20) and a large one
    (81 spots, from 0). The cells come from the small slide's region. By default the small slide is a
    candidate with 35 matches per cell and wins; with ``anchor_k=50`` it is left out, and alone it is
    an error naming ``anchor_k``. A third slide of 9 spots makes every slide's decision compare 8
    matches, with a warning naming it.
    """
    from gearsx.tl._anchored import ANCHOR_K, DECISION_K, plan_anchor

    rng = np.random.default_rng(2)
    small, big = _grid(6, offset=20.0), _grid(9)
    coords = np.vstack([small, big])
    emb = _waves(coords)
    centre = emb.mean(0)
    ref = {"slide_names": ["small", "big"], "slides": np.r_[np.zeros(36, int), np.ones(81, int)], "coords": coords}
    ref["embedding"] = emb - centre
    cells = rng.uniform(20, 25, size=(200, 2))
    query = _waves(cells) - centre + rng.normal(scale=0.05, size=(200, 12))
    kw = {"anchor": "reference", "reference_slide": None, "random_state": 0, "temperature": 0.5}
    plan = plan_anchor(query, ref, k=None, **kw)
    assert ANCHOR_K == 50
    assert (plan.record["slide"], plan.record["anchor_k"], plan.record["decision_k"]) == ("small", 35, DECISION_K)
    assert np.median(np.linalg.norm(plan.anchors - cells, axis=1)) < 1.0  # the weights keep 35 of 36 spots local
    explicit = plan_anchor(query, ref, k=50, **kw)
    assert (explicit.record["slide"], explicit.record["anchor_k"]) == ("big", 50)
    only_small = {**ref, "slide_names": ["small"], "slides": ref["slides"][:36], "coords": small}
    only_small["embedding"] = ref["embedding"][:36]
    assert plan_anchor(query, only_small, k=None, **kw).record["anchor_k"] == 35
    with pytest.raises(ValueError, match="pass a smaller anchor_k"):
        plan_anchor(query, only_small, k=50, **kw)
    tiny = _grid(3, offset=40.0)
    with_tiny = {
        "slide_names": ["small", "big", "tiny"], "slides": np.r_[ref["slides"], np.full(9, 2)],
        "coords": np.vstack([coords, tiny]), "embedding": np.vstack([ref["embedding"], _waves(tiny) - centre]),
    }  # fmt: skip
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        three = plan_anchor(query, with_tiny, k=None, **kw)
    assert (three.record["slide"], three.record["anchor_k"], three.record["decision_k"]) == ("small", 35, 8)
    assert "['tiny']" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        chosen = plan_anchor(query, with_tiny, k=8, **kw)
    assert (chosen.record["slide"], chosen.record["decision_k"]) == ("small", 8)
    assert "too few spots" not in caplog.text  # 8 matches were asked for: nothing to warn about


def test_each_candidate_slides_similarity_is_recorded_and_the_best_chosen(caplog):
    """The record lists every candidate slide's median similarity; the chosen slide has the highest.

    Two slides of one wave field (the "small" one covers the cells' region, the "big" one another part
    of the field): the small slide is more similar and chosen, both similarities are in the record,
    and the info log names the runner-up. With ``reference_slide`` only that slide is a candidate.
    """
    from gearsx.tl._anchored import plan_anchor

    rng = np.random.default_rng(2)
    small, big = _grid(6, offset=20.0), _grid(9)
    coords = np.vstack([small, big])
    emb = _waves(coords)
    ref = {"slide_names": ["small", "big"], "slides": np.r_[np.zeros(36, int), np.ones(81, int)], "coords": coords}
    ref["embedding"] = emb - emb.mean(0)
    query = _waves(rng.uniform(20, 25, size=(200, 2))) - emb.mean(0) + rng.normal(scale=0.05, size=(200, 12))
    kw = {"anchor": "reference", "k": 20, "random_state": 0, "temperature": 0.5}
    with caplog.at_level(logging.INFO, logger="gearsx"):
        plan = plan_anchor(query, ref, reference_slide=None, **kw)
    sims = dict(zip(plan.record["candidate_slides"], plan.record["slide_similarity"], strict=True))
    assert set(sims) == {"small", "big"}
    assert plan.record["slide"] == max(sims, key=sims.get) == "small"
    assert sims["small"] == plan.record["similarity"] > sims["big"]
    assert "the next best ('big')" in caplog.text
    chosen = plan_anchor(query, ref, reference_slide="big", **kw)
    assert list(chosen.record["candidate_slides"]) == ["big"]
    assert chosen.record["slide_similarity"][0] == pytest.approx(sims["big"])


def test_the_decision_compares_the_best_matches_whatever_anchor_k():
    """On a small slide a wide ``anchor_k`` widens the anchors, not the decision.

    81 spots, 60 matches per cell. The slide choice, the match score against the shuffled null, the
    similarities recorded and the localisation compare each cell's best ``DECISION_K`` matches,
    so they are those of ``anchor_k=DECISION_K``. Over all 60 matches (the old code) the null's and
    the reference's similarities fell to a third and the localisation from 0.49 to 0.04 (a warning
    that the matches say little); on the benchmark's MERFISH at ten-cell spots (79 spots) the
    uncertainty's rank correlation with the error fell from 0.18 to 0.04.
    """
    from gearsx.tl._anchored import DECISION_K, plan_anchor

    rng = np.random.default_rng(1)
    grid = _grid(9)
    cells = rng.uniform(0, 8, size=(300, 2))
    centre = _waves(grid).mean(0)
    ref = {
        "slide_names": ["s0"], "slides": np.zeros(len(grid), dtype=int), "coords": grid,
        "embedding": _waves(grid) - centre,
    }  # fmt: skip
    query = _waves(cells) - centre + rng.normal(scale=0.05, size=(300, 12))
    kw = {"anchor": "auto", "reference_slide": None, "random_state": 0, "temperature": 0.5}
    narrow = plan_anchor(query, ref, k=DECISION_K, **kw)
    wide = plan_anchor(query, ref, k=60, **kw)
    assert narrow.anchored
    assert wide.anchored
    for key in ("similarity", "null_similarity", "reference_similarity", "match_score", "localisation"):
        assert wide.record[key] == narrow.record[key]
    assert (wide.record["anchor_k"], wide.record["decision_k"]) == (60, DECISION_K)
    err = np.linalg.norm(wide.anchors - cells, axis=1)
    assert np.median(err) < 0.5  # the wide anchors are still where the cells are (spot spacing 1)


def test_uncertainty_is_higher_for_scrambled_cells(toy_model):
    _, sc = _reference_and_query()
    rng = np.random.default_rng(3)
    bad = rng.choice(sc.n_obs, 70, replace=False)
    x = sc.obsm["X_gears"].copy()
    x[bad] = x[rng.permutation(bad)][:, rng.permutation(x.shape[1])]  # expression of nowhere in particular
    sc.obsm["X_gears"] = x
    gx.tl.reconstruct(sc, toy_model, anchor="reference", **_FAST)
    unc = sc.obs["gears_uncertainty"].to_numpy()
    good = np.setdiff1d(np.arange(sc.n_obs), bad)
    assert np.median(unc[bad]) > 2 * np.median(unc[good])
    # and the uncertainty tracks the actual error over all cells
    from scipy.stats import spearmanr

    err = np.linalg.norm(sc.obsm["X_gears_spatial"] - sc.obsm["spatial_gt"], axis=1)
    assert spearmanr(unc, err)[0] > 0.3


def test_cells_without_counts_get_the_slides_uncertainty(toy_model):
    # A cell without a single count was placed with an ordinary uncertainty: its profile matched spots
    # like any other. Its position is unknown, and the uncertainty now says so.
    _, sc = _reference_and_query()
    empty = np.random.default_rng(4).choice(sc.n_obs, 40, replace=False)
    sc.X = np.ones((sc.n_obs, 1), dtype=np.float32)
    sc.X[empty] = 0
    before = gx.tl.reconstruct(sc, toy_model, anchor="reference", copy=True, **_FAST)
    assert before.uns["gears"]["anchor"]["n_empty"] == 40
    unc = before.obs["gears_uncertainty"].to_numpy()
    rest = np.setdiff1d(np.arange(sc.n_obs), empty)
    assert unc[empty].min() > np.quantile(unc[rest], 0.99)
    # the slide's spread around the anchor: at least the RMS distance of the spots to their centre
    spots = toy_model.reference()["coords"]
    assert unc[empty].min() >= np.sqrt(((spots - spots.mean(0)) ** 2).sum(1).mean())
    # counts in layers['counts'] decide when present; an X of zeros everywhere is a placeholder, not counts
    sc.layers["counts"], sc.X = sc.X.copy(), np.zeros((sc.n_obs, 1), dtype=np.float32)
    again = gx.tl.reconstruct(sc, toy_model, anchor="reference", copy=True, **_FAST)
    np.testing.assert_allclose(again.obs["gears_uncertainty"], unc)
    del sc.layers["counts"]
    placeholder = gx.tl.reconstruct(sc, toy_model, anchor="reference", copy=True, **_FAST)
    assert placeholder.uns["gears"]["anchor"]["n_empty"] == 0
    assert np.median(placeholder.obs["gears_uncertainty"].to_numpy()[empty]) < np.quantile(unc[rest], 0.9)


def test_auto_anchors_the_same_tissue_and_not_another(toy_model, caplog):
    _, sc = _reference_and_query()
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.tl.reconstruct(sc, toy_model, anchor="auto", **_FAST)
    assert sc.uns["gears"]["anchor"]["mode"] == "reference"
    assert "unanchored" not in caplog.text
    other = sc.copy()
    rng = np.random.default_rng(5)
    other.obsm["X_gears"] = rng.normal(size=other.obsm["X_gears"].shape).astype(np.float32)  # not this tissue
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gearsx"):  # the default verbosity shows the change of frame
        gx.tl.reconstruct(other, toy_model, anchor="auto", **_FAST)
    rec = other.uns["gears"]["anchor"]
    assert rec["mode"] == "intrinsic"
    assert rec["match_score"] < 0.5
    assert "left the cells unanchored" in caplog.text
    assert "anchor='reference'" in caplog.text
    assert "X_gears_intrinsic" not in other.obsm
    gx.tl.reconstruct(other, toy_model, anchor=None, **_FAST)
    assert other.uns["gears"]["anchor"]["mode"] == "intrinsic"
    with pytest.raises(ValueError, match="anchor"):
        gx.tl.reconstruct(other, toy_model, anchor="always", **_FAST)
    with pytest.raises(ValueError, match="reference_slide"):
        gx.tl.reconstruct(other, toy_model, anchor="reference", reference_slide="s9", **_FAST)


def test_auto_warns_when_the_model_carries_no_reference(toy_model, monkeypatch, caplog):
    """A model saved before references were kept cannot anchor: 'auto' says so instead of an info line."""
    _, sc = _reference_and_query()
    monkeypatch.setattr(toy_model, "reference", lambda: None)
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.tl.reconstruct(sc, toy_model, anchor="auto", **_FAST)
    assert sc.uns["gears"]["anchor"]["decision"] == "the model has no reference"
    assert "carries no reference spots" in caplog.text
    with pytest.raises(ValueError, match="no reference spots"):
        gx.tl.reconstruct(sc, toy_model, anchor="reference", **_FAST)


def test_loaded_model_anchors_without_the_st_data(toy_model, tmp_path):
    _, sc = _reference_and_query()
    toy_model.save(tmp_path / "geo")
    loaded = gx.model.GEARS.load(tmp_path / "geo", accelerator="cpu")
    assert loaded.adata is None
    a, b = sc.copy(), sc.copy()
    gx.tl.reconstruct(a, toy_model, anchor="reference", **_FAST)
    gx.tl.reconstruct(b, loaded, anchor="reference", **_FAST)
    np.testing.assert_allclose(a.obsm["X_gears_anchor"], b.obsm["X_gears_anchor"], atol=1e-5)
    assert b.uns["gears"]["anchor"]["slide"] == "s0"


def test_anchored_result_is_drawn_over_its_reference_slide(toy_model, caplog):
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    st, sc = _reference_and_query()
    gx.tl.reconstruct(sc, toy_model, anchor="reference", **_FAST)
    ax = gx.pl.reconstruction(sc, reference=st, show=False)
    spots, cells = ax.collections[0].get_offsets(), ax.collections[1].get_offsets()
    np.testing.assert_allclose(spots, st.obsm["spatial"])  # the reference, as it is
    np.testing.assert_allclose(cells, sc.obsm["X_gears_spatial"])  # the cells, not re-aligned
    # the slide's frame without an image: y down, as sc.pl.spatial draws the reference (it pointed up, mirrored)
    assert ax.yaxis_inverted()
    other = st.copy()  # ST data of other slides: no silent empty background
    other.obs["slide"] = "elsewhere"
    other.uns["gears_prepare"] = {"params": {"slide_key": "slide"}}
    with pytest.raises(ValueError, match="does not hold"):
        gx.pl.reconstruction(sc, reference=other, show=False)
    # an image keyed by another slide is not drawn under the anchored slide's spots
    image = {"images": {"hires": np.ones((20, 20, 3))}, "scalefactors": {"tissue_hires_scalef": 2.0}}
    two = ad.concat([st, st], label="slide", keys=["s0", "s1"], index_unique="-")
    two.obsm["spatial"] = st.obsm["spatial"][np.r_[: st.n_obs, : st.n_obs]]
    two.uns["gears_prepare"] = {"params": {"slide_key": "slide"}}
    two.uns["spatial"] = {"s1": image}
    with caplog.at_level("WARNING", logger="gearsx"):
        ax = gx.pl.reconstruction(sc, reference=two, show=False)
    assert not ax.images
    assert "no image keyed by the anchored slide 's0'" in caplog.text
    two.uns["spatial"] = {"s0": image}  # the anchored slide's own image, at its scale factor
    ax = gx.pl.reconstruction(sc, reference=two, show=False)
    assert len(ax.images) == 1
    # upright: the image's first row at the top, as imshow, sc.pl.spatial and gx.pl.domains draw it
    # (it was drawn upside down, the cells flipped with it)
    assert ax.yaxis_inverted()
    two.obs["domain"] = pd.Categorical(np.where(np.arange(two.n_obs) % 2 == 0, "a", "b"))
    assert gx.pl.domains(
        two[two.obs["slide"] == "s0"].copy(), color="domain", library_id="s0", show=False
    ).yaxis_inverted()
    np.testing.assert_allclose(ax.collections[0].get_offsets(), 2.0 * st.obsm["spatial"])
    one = st.copy()  # a one-slide reference: its single image is the slide's, whatever its name
    one.uns["spatial"] = {"V1_section": image}
    assert len(gx.pl.reconstruction(sc, reference=one, show=False).images) == 1
    gx.tl.reconstruct(sc, toy_model, anchor=None, **_FAST)
    with pytest.raises(ValueError, match="intrinsic"):
        gx.pl.reconstruction(sc, reference=st, show=False)
    plt.close("all")


def test_plot_and_projection_find_the_anchored_slide_by_the_model_s_slide_column(toy_model):
    """The model's slide column decides which spots are the anchored slide's, not another column a step recorded.

    The plot used to take the reference's recorded column (``resolve_slide_key``), while
    ``project_groups`` took the model's: with another column recorded whose values overlap the
    slide's name, the plot drew a part of the slide, silently.
    """
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    st, sc = _reference_and_query()
    gx.tl.reconstruct(sc, toy_model, anchor="reference", **_FAST)
    ref = st.copy()
    ref.obs["batch"] = np.where(np.arange(ref.n_obs) % 2 == 0, "s0", "s1")  # another column, recorded by a step
    ref.uns["gears_prepare"] = {"params": {"slide_key": "batch"}}
    ax = gx.pl.reconstruction(sc, reference=ref, show=False)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), st.obsm["spatial"])  # the whole slide s0
    sc.obs["half"] = np.where(sc.obsm["spatial_gt"][:, 0] < 5, "left", "right")
    gx.tl.project_groups(sc, ref, "half")
    assert np.isfinite(ref.obsm["gears_half"].to_numpy()).all()  # every spot is slide s0's
    older = sc.copy()  # a result written before the record kept the model's column: the recorded one is read
    for key in ("slide_key", "spot_coords"):
        older.uns["gears"]["anchor"].pop(key, None)
    ax = gx.pl.reconstruction(older, reference=ref, show=False)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), st.obsm["spatial"][::2])  # obs['batch'] == 's0'
    gone = ref.copy()  # the model's slide absent: the same clear error for both
    gone.obs["slide"] = "s9"
    with pytest.raises(ValueError, match="anchored on slide 's0', which `reference` does not hold"):
        gx.pl.reconstruction(sc, reference=gone, show=False)
    with pytest.raises(ValueError, match="anchored on slide 's0', which `adata_st` does not hold"):
        gx.tl.project_groups(sc, gone, "half")
    plt.close("all")


def test_anchored_result_is_drawn_in_the_frame_the_model_was_trained_in(caplog):
    """A model trained on ``obsm['spatial_um']`` anchors the cells in microns; the plot must draw them there.

    The spots used to come from ``obsm['spatial']`` (pixels) whatever the model's key, so the cells sat
    in a corner of the slide, silently. Now the spots are drawn from the recorded key; over an image the
    micron frame is carried onto the pixels by the exact affine map between the two keys, and a frame
    no affine map carries there is drawn without the image, with a warning.
    """
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    st, sc = _reference_and_query()
    st.obsm["spatial_um"] = 0.25 * st.obsm["spatial"] + 7.0
    geo = gx.model.GEARS(
        st, slide_key="slide", spatial_key="spatial_um", n_out=8, dim=32, n_inducing=8, n_context_blocks=1,
        n_generator_blocks=1,
    )  # fmt: skip
    geo.train(max_epochs=1, n_batches=2, batch_size=2, n_min=64, n_max=128, validation=None, progress=False)
    gx.tl.reconstruct(sc, geo, anchor="reference", **_FAST)
    assert sc.uns["gears"]["anchor"]["spatial_key"] == "spatial_um"
    cells = sc.obsm["X_gears_spatial"]
    assert np.median(np.linalg.norm(cells - (0.25 * sc.obsm["spatial_gt"] + 7.0), axis=1)) < 0.25  # in microns
    ax = gx.pl.reconstruction(sc, reference=st, show=False)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), st.obsm["spatial_um"])
    np.testing.assert_allclose(ax.collections[1].get_offsets(), cells)
    st.uns["spatial"] = {
        "V1": {"images": {"hires": np.ones((20, 20, 3))}, "scalefactors": {"tissue_hires_scalef": 2.0}}
    }
    ax = gx.pl.reconstruction(sc, reference=st, show=False)
    assert len(ax.images) == 1
    np.testing.assert_allclose(ax.collections[0].get_offsets(), 2.0 * st.obsm["spatial"], atol=1e-9)
    np.testing.assert_allclose(ax.collections[1].get_offsets(), 2.0 * (cells - 7.0) / 0.25, atol=1e-8)
    bent = st.copy()  # a frame no affine map carries onto the pixels
    bent.obsm["spatial_um"] = st.obsm["spatial_um"] ** 2
    caplog.clear()
    with caplog.at_level("WARNING", logger="gearsx"):
        ax = gx.pl.reconstruction(sc, reference=bent, show=False)
    assert not ax.images
    assert "no affine map" in caplog.text
    del bent.obsm["spatial_um"]
    with pytest.raises(KeyError, match="spatial_um"):
        gx.pl.reconstruction(sc, reference=bent, show=False)
    plt.close("all")


def test_reference_drawing_reads_the_record_of_the_run_that_wrote_the_basis(toy_model):
    """Two runs under two ``key_added``: each layout is drawn (or refused) by its own run's record.

    The plot read ``uns['gears']`` whatever the basis: an intrinsic layout written under another key was
    drawn over the reference slide as if anchored, and an anchored one under another key was refused.
    """
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    st, sc = _reference_and_query()
    gx.tl.reconstruct(sc, toy_model, anchor="reference", **_FAST)  # uns['gears'], obsm['X_gears_spatial']
    gx.tl.reconstruct(sc, toy_model, anchor=None, key_added="run2", **_FAST)  # uns['run2'], obsm['X_run2_spatial']
    with pytest.raises(ValueError, match=r"uns\['run2'\]\['anchor'\]\['mode'\] is not 'reference'"):
        gx.pl.reconstruction(sc, basis="X_run2_spatial", reference=st, show=False)
    ax = gx.pl.reconstruction(sc, basis="X_gears_spatial", reference=st, show=False)
    np.testing.assert_allclose(ax.collections[1].get_offsets(), sc.obsm["X_gears_spatial"])
    ax = gx.pl.reconstruction(sc, basis="X_gears_anchor", reference=st, show=False)
    np.testing.assert_allclose(ax.collections[1].get_offsets(), sc.obsm["X_gears_anchor"])
    gx.tl.reconstruct(sc, toy_model, anchor=None, **_FAST)
    gx.tl.reconstruct(sc, toy_model, anchor="reference", key_added="run2", **_FAST)
    ax = gx.pl.reconstruction(sc, basis="X_run2_spatial", reference=st, show=False)
    np.testing.assert_allclose(ax.collections[1].get_offsets(), sc.obsm["X_run2_spatial"])
    with pytest.raises(ValueError, match="intrinsic"):
        gx.pl.reconstruction(sc, basis="X_gears_spatial", reference=st, show=False)
    with pytest.raises(ValueError, match="not one"):  # the stitched layout: not in the reference's frame
        gx.pl.reconstruction(sc, basis="X_run2_intrinsic", reference=st, show=False)
    plt.close("all")


def test_localisation_tells_informative_anchors_from_scattered_ones(toy_model, caplog):
    from gearsx.tl._anchored import localisation, plan_anchor

    _, sc = _reference_and_query()
    gx.tl.reconstruct(sc, toy_model, anchor="reference", **_FAST)
    assert sc.uns["gears"]["anchor"]["localisation"] > 0.6  # matches sit together
    assert "barely localised" not in caplog.text
    assert 0.0 < sc.uns["gears"]["anchor"]["global_agreement"] <= 1.0

    # a reference whose embedding says which of 5 types a spot is, not where it is (types scattered)
    rng = np.random.default_rng(4)
    codes = rng.normal(size=(5, 16))
    spot_type = rng.integers(0, 5, 900)

    class TypeOnlyReference:
        def reference(self):
            return {
                "embedding": codes[spot_type] + 0.1 * rng.normal(size=(900, 16)),
                "coords": rng.uniform(0, 10, size=(900, 2)),
                "slides": np.zeros(900, dtype=int),
                "slide_names": np.array(["s0"]),
            }

    cells = codes[rng.integers(0, 5, 300)] + 0.1 * rng.normal(size=(300, 16))
    plan = plan_anchor(
        cells, TypeOnlyReference().reference(), anchor="reference", reference_slide=None, k=20, random_state=0
    )
    assert abs(plan.record["localisation"]) < 0.15  # as scattered as random spots
    assert "barely localised" in caplog.text
    # the known answers of the measure itself
    xy = rng.uniform(size=(500, 2))
    assert localisation(np.zeros(100), xy, k=20, random_state=0) == 1.0
    pts = xy[rng.integers(0, 500, size=(400, 20))]
    spread = np.sqrt(((pts - pts.mean(1, keepdims=True)) ** 2).sum(-1).mean(1))
    assert abs(localisation(spread, xy, k=20, random_state=0)) < 0.05


def test_global_agreement_known_answers():
    from gearsx.tl._anchored import global_agreement

    rng = np.random.default_rng(0)
    xy = rng.uniform(size=(300, 2))
    turned = 3.0 * xy[:, ::-1] @ np.array([[0.6, -0.8], [0.8, 0.6]]) + 5.0  # reflected, rotated, scaled, moved
    assert global_agreement(turned, xy) == pytest.approx(1.0)
    assert global_agreement(rng.permutation(xy), xy) < 0.1  # no shared shape
    bent = np.c_[xy[:, 0], xy[:, 1] + 2 * (xy[:, 0] - 0.5) ** 2]
    assert 0.3 < global_agreement(bent, xy) < 0.99


def _two_views(seed=0, n_spots=900, n_cells=600, n_genes=40):
    """Spots and cells whose embedding places them only roughly (heavy noise) and whose expression
    places them finely (smooth gene gradients over the tissue, light noise)."""
    rng = np.random.default_rng(seed)
    f_emb, f_expr = rng.normal(size=(2, 8)) / 3, rng.normal(size=(2, n_genes)) / 2
    phase = rng.uniform(0, 2 * np.pi, n_genes)

    def views(p, noise):
        emb = np.c_[np.sin(p @ f_emb), np.cos(p @ f_emb)] + 0.8 * rng.normal(size=(len(p), 16))
        expr = np.sin(p @ f_expr + phase) + noise * rng.normal(size=(len(p), n_genes))
        return emb.astype(np.float32), expr.astype(np.float32)

    spots, cells = rng.uniform(0, 10, size=(n_spots, 2)), rng.uniform(0, 10, size=(n_cells, 2))
    return spots, views(spots, 0.05), cells, views(cells, 0.15)


def test_expression_view_sharpens_the_matches():
    import scipy.sparse as sp

    spots, (emb_s, expr_s), cells, (emb_c, expr_c) = _two_views()
    match = gx.geometry.match_reference

    def err(m):
        return float(np.median(np.linalg.norm(m.anchors - cells, axis=1)))

    alone = match(emb_c, emb_s, spots, k=10)
    both = match(emb_c, emb_s, spots, k=10, query_expression=expr_c, reference_expression=expr_s)
    assert err(both) < 0.5 * err(alone)
    # the reported similarity stays the embedding's cosine of the chosen matches
    unit_c, unit_s = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (emb_c, emb_s))
    np.testing.assert_allclose(both.similarity[:, 0], (unit_c * unit_s[both.indices[:, 0]]).sum(1), atol=1e-5)
    # weight 0 is the embedding alone, weight 1 the expression alone
    zero = match(emb_c, emb_s, spots, k=10, query_expression=expr_c, reference_expression=expr_s, expression_weight=0)
    np.testing.assert_array_equal(zero.indices, alone.indices)
    one = match(emb_c, emb_s, spots, k=10, query_expression=expr_c, reference_expression=expr_s, expression_weight=1)
    expr_only = match(expr_c, expr_s, spots, k=10)
    assert (np.sort(one.indices, 1) == np.sort(expr_only.indices, 1)).mean() > 0.99
    # a sparse query gives the same matches (densified in blocks)
    sparse = match(emb_c, emb_s, spots, k=10, query_expression=sp.csr_matrix(expr_c), reference_expression=expr_s)
    np.testing.assert_array_equal(sparse.indices, both.indices)
    with pytest.raises(ValueError, match="both"):
        match(emb_c, emb_s, spots, query_expression=expr_c)
    with pytest.raises(ValueError, match="expression_weight"):
        match(emb_c, emb_s, spots, query_expression=expr_c, reference_expression=expr_s, expression_weight=1.5)
    with pytest.raises(ValueError, match="same genes"):
        match(emb_c, emb_s, spots, query_expression=expr_c[:, :5], reference_expression=expr_s)


@pytest.fixture(scope="module")
def two_view_model():
    spots, (emb_s, expr_s), _, _ = _two_views()
    st = ad.AnnData(np.zeros((len(spots), expr_s.shape[1]), dtype=np.float32))
    st.var_names = [f"g{i}" for i in range(expr_s.shape[1])]
    st.layers["gears_centered"] = expr_s
    st.obsm["spatial"], st.obsm["X_gears"] = spots, emb_s
    geo = gx.model.GEARS(st, n_out=8, dim=32, n_inducing=8, n_context_blocks=1, n_generator_blocks=1)
    geo.train(max_epochs=1, n_batches=2, batch_size=2, n_min=64, n_max=128, validation=None, progress=False)
    return geo


def _two_view_cells(with_layer=True):
    _, _, cells, (emb_c, expr_c) = _two_views()
    sc = ad.AnnData(np.zeros((len(cells), expr_c.shape[1]), dtype=np.float32))
    sc.var_names = [f"g{i}" for i in range(expr_c.shape[1])]
    if with_layer:
        sc.layers["gears_centered"] = expr_c
    sc.obsm["X_gears"], sc.obsm["spatial_gt"] = emb_c, cells
    return sc


def test_reconstruct_matches_on_expression_when_both_sides_have_it(two_view_model, tmp_path):
    def anchor_err(a):
        return float(np.median(np.linalg.norm(a.obsm["X_gears_anchor"] - a.obsm["spatial_gt"], axis=1)))

    sc = _two_view_cells()
    gx.tl.reconstruct(sc, two_view_model, anchor="reference", **_FAST)
    rec = sc.uns["gears"]["anchor"]
    assert rec["expression_weight"] == 0.75
    assert rec["expression"] == "used"
    emb_only = _two_view_cells()
    gx.tl.reconstruct(emb_only, two_view_model, anchor="reference", anchor_expression_weight=0, **_FAST)
    assert emb_only.uns["gears"]["anchor"]["expression_weight"] == 0.0
    assert anchor_err(sc) < 0.5 * anchor_err(emb_only)
    # genes in another order (and one extra) are matched by name
    order = np.random.default_rng(0).permutation(sc.n_vars)
    expr = np.c_[sc.layers["gears_centered"][:, order], np.ones(sc.n_obs, np.float32)]
    shuffled = ad.AnnData(np.zeros_like(expr), layers={"gears_centered": expr})
    shuffled.var_names = [*sc.var_names[order], "extra"]
    shuffled.obsm["X_gears"], shuffled.obsm["spatial_gt"] = sc.obsm["X_gears"], sc.obsm["spatial_gt"]
    gx.tl.reconstruct(shuffled, two_view_model, anchor="reference", **_FAST)
    # (equal up to float32 rounding: the genes' sums run in another order)
    np.testing.assert_allclose(shuffled.obsm["X_gears_anchor"], sc.obsm["X_gears_anchor"], rtol=1e-5)
    # a loaded model keeps the spots' expression
    two_view_model.save(tmp_path / "geo")
    loaded = gx.model.GEARS.load(tmp_path / "geo", accelerator="cpu")
    np.testing.assert_array_equal(loaded.reference()["expression"], two_view_model.reference()["expression"])
    again = _two_view_cells()
    gx.tl.reconstruct(again, loaded, anchor="reference", **_FAST)
    np.testing.assert_allclose(again.obsm["X_gears_anchor"], sc.obsm["X_gears_anchor"])


def test_reconstruct_without_the_query_expression_says_so(two_view_model, caplog):
    sc = _two_view_cells(with_layer=False)
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.tl.reconstruct(sc, two_view_model, anchor="reference", **_FAST)  # default: the embedding alone, warned
    rec = sc.uns["gears"]["anchor"]
    assert rec["expression_weight"] == 0.0
    assert "gears_centered" in rec["expression"]
    assert any("embedding alone" in r.getMessage() and "gears_centered" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gearsx"):  # chosen explicitly: no warning
        gx.tl.reconstruct(_two_view_cells(with_layer=False), two_view_model, anchor="reference",
                          anchor_expression_weight=0, **_FAST)  # fmt: skip
    assert not any("embedding alone" in r.getMessage() for r in caplog.records)
    broken = _two_view_cells()
    layer = np.array(broken.layers["gears_centered"])  # a copy: the views are shared between tests
    layer[3, 2] = np.nan
    broken.layers["gears_centered"] = layer
    with pytest.raises(ValueError, match="holds NaN"):
        gx.tl.reconstruct(broken, two_view_model, anchor="reference", **_FAST)
    assert "X_gears_spatial" not in broken.obsm
    assert "gears" not in broken.uns
    bare = _two_view_cells(with_layer=False)
    with pytest.raises(ValueError, match="gears_centered"):
        gx.tl.reconstruct(bare, two_view_model, anchor="reference", anchor_expression_weight=0.5, **_FAST)
    assert "X_gears_spatial" not in bare.obsm  # untouched
    assert "gears" not in bare.uns
    few = _two_view_cells()[:, :30].copy()
    with pytest.raises(ValueError, match="lacks 10 of the reference's 40 genes"):
        gx.tl.reconstruct(few, two_view_model, anchor="reference", anchor_expression_weight=0.75, **_FAST)
    with pytest.raises(ValueError, match="anchor_expression_weight"):
        gx.tl.reconstruct(_two_view_cells(), two_view_model, anchor_expression_weight=2, **_FAST)


def test_a_query_whose_genes_co_vary_unlike_the_spots_is_matched_on_the_embedding(two_view_model, caplog):
    """Profiles measured alike co-vary alike; a query whose genes do not (another technology) is matched on the embedding.

    Known answer: relabelling the query's genes leaves each column's values but makes comparing profiles
    gene by gene meaningless, so the anchors matched on the embedding alone lie closer to the truth than
    those that weigh the scrambled expression as given.
    """

    def anchor_err(a):
        return float(np.median(np.linalg.norm(a.obsm["X_gears_anchor"] - a.obsm["spatial_gt"], axis=1)))

    sc = _two_view_cells()
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.tl.reconstruct(sc, two_view_model, anchor="reference", **_FAST)
    rec = sc.uns["gears"]["anchor"]
    assert rec["gene_agreement"] > 0.9
    assert rec["gene_reliability"] > 0.9
    assert rec["expression_weight"] == 0.75
    assert not any("co-vary" in r.getMessage() for r in caplog.records)

    def relabelled():  # the same cells with their genes' values relabelled: each column still varies, unlike the spots'
        a = _two_view_cells()
        layer = np.asarray(a.layers["gears_centered"])
        a.layers["gears_centered"] = layer[:, np.random.default_rng(0).permutation(layer.shape[1])]
        return a

    default = relabelled()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.tl.reconstruct(default, two_view_model, anchor="reference", **_FAST)
    rec = default.uns["gears"]["anchor"]
    assert rec["gene_agreement"] < 0.2
    assert rec["expression_weight"] == 0.0
    assert "co-vary unlike" in rec["expression"]
    assert "another technology" in rec["expression"]
    warned = [r.getMessage() for r in caplog.records if "embedding alone" in r.getMessage()]
    assert len(warned) == 1
    assert "co-vary unlike" in warned[0]
    assert warned[0].endswith(
        "Pass anchor_expression_weight=0 to choose this explicitly, or 0.75 to weigh the expression anyway."
    )  # one sentence of choices, each named once
    # the same anchors as the embedding alone asked for explicitly
    emb_only = relabelled()
    gx.tl.reconstruct(emb_only, two_view_model, anchor="reference", anchor_expression_weight=0, **_FAST)
    np.testing.assert_allclose(default.obsm["X_gears_anchor"], emb_only.obsm["X_gears_anchor"])
    assert "gene_agreement" not in emb_only.uns["gears"]["anchor"]  # without the expression: nothing to check
    # a weight given explicitly is kept, with a warning naming 0, and its anchors are worse
    forced = relabelled()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.tl.reconstruct(forced, two_view_model, anchor="reference", anchor_expression_weight=0.75, **_FAST)
    assert forced.uns["gears"]["anchor"]["expression_weight"] == 0.75
    assert forced.uns["gears"]["anchor"]["gene_agreement"] < 0.2
    assert any("co-vary" in r.getMessage() and "anchor_expression_weight=0" in r.getMessage() for r in caplog.records)
    assert anchor_err(default) < 0.8 * anchor_err(forced)


def test_transport_weighs_the_anchors_with_a_balanced_plan(two_view_model, tmp_path):
    pytest.importorskip("ot", reason="POT is the `transport` extra (installed by make test)")

    def anchor_err(a):
        return float(np.median(np.linalg.norm(a.obsm["X_gears_anchor"] - a.obsm["spatial_gt"], axis=1)))

    default, sc = _two_view_cells(), _two_view_cells()
    gx.tl.reconstruct(default, two_view_model, anchor="reference", **_FAST)
    gx.tl.reconstruct(sc, two_view_model, anchor="reference", anchor_transport=True, **_FAST)
    rec = sc.uns["gears"]["anchor"]["transport"]
    assert abs(rec["entropy"] - rec["target_entropy"]) < 0.05  # the plan as spread as the matches' weights
    w = default.obsm["gears_anchor_weights"]
    np.testing.assert_allclose(rec["target_entropy"], -(w * np.log(np.maximum(w, 1e-300))).sum(1).mean(), rtol=1e-5)
    assert rec["n_cells_solved"] == sc.n_obs
    assert 0 < rec["median_plan_share"] < 1
    assert sc.uns["gears"]["reconstruct"]["params"]["anchor_transport"] is True
    sc.write_h5ad(tmp_path / "sc.h5ad")  # the record is file-ready
    assert ad.read_h5ad(tmp_path / "sc.h5ad").uns["gears"]["anchor"]["transport"]["epsilon"] == rec["epsilon"]
    # both kinds of anchor place these cells well; their inverse-variance blend is no worse than the matches
    assert not np.allclose(sc.obsm["X_gears_anchor"], default.obsm["X_gears_anchor"])
    assert anchor_err(sc) < 1.1 * anchor_err(default)
    # each cell's spots: its matches, then the plan's heaviest spots for its row, weighed by their shares
    # in the blend, so that project_groups sums where the blended anchor comes from
    k = default.obsm["gears_anchor_spots"].shape[1]
    spots, weights = sc.obsm["gears_anchor_spots"], sc.obsm["gears_anchor_weights"]
    assert spots.shape == weights.shape == (sc.n_obs, 2 * k)
    np.testing.assert_array_equal(spots[:, :k], default.obsm["gears_anchor_spots"])
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-5)
    share = weights[:, k:].sum(1)
    np.testing.assert_allclose(np.median(share), rec["median_plan_share"], rtol=1e-4)
    np.testing.assert_allclose(weights[:, :k] / (1 - share[:, None]), default.obsm["gears_anchor_weights"], atol=1e-5)
    coords = sc.uns["gears"]["anchor"]["spot_coords"]
    mixture = (weights[..., None] * coords[spots]).sum(1)  # the plan's rows cut to their k heaviest spots
    err_mix = np.linalg.norm(mixture - sc.obsm["X_gears_anchor"], axis=1)
    err_matches = np.linalg.norm(default.obsm["X_gears_anchor"] - sc.obsm["X_gears_anchor"], axis=1)
    assert np.median(err_mix) < 0.5 * np.median(err_matches)
    spot_xy, _, _, _ = _two_views()
    st = ad.AnnData(np.zeros((len(spot_xy), 1), dtype=np.float32), obsm={"spatial": spot_xy})
    sc.obs["side"] = pd.Categorical(np.where(sc.obsm["spatial_gt"][:, 0] < 5, "left", "right"))
    gx.tl.project_groups(sc, st, "side")
    table = st.obsm["gears_side"]
    np.testing.assert_allclose(table.sum().to_numpy(), sc.obs["side"].value_counts()[table.columns], rtol=1e-4)
    left = table["left"] / table.sum(1)  # each side's cells weigh mostly on spots of their side
    assert left[spot_xy[:, 0] < 4].mean() > 0.7 > 0.3 > left[spot_xy[:, 0] > 6].mean()
    # one match per cell holds no entropy: the plan goes as sharp as its range allows
    single = _two_view_cells()
    gx.tl.reconstruct(single, two_view_model, anchor="reference", anchor_k=1, anchor_transport=True, **_FAST)
    sharp = single.uns["gears"]["anchor"]["transport"]
    assert sharp["epsilon"] < 0.5 * rec["epsilon"]
    assert sharp["entropy"] < rec["entropy"]
    # it needs the expression view, and says what is missing before anything is written
    for cells, kwargs, match in (
        (_two_view_cells(), {"anchor_expression_weight": 0}, "anchor_expression_weight=0"),
        (_two_view_cells(with_layer=False), {}, "gears_centered"),
    ):
        with pytest.raises(ValueError, match=match):
            gx.tl.reconstruct(cells, two_view_model, anchor="reference", anchor_transport=True, **kwargs, **_FAST)
        assert "gears" not in cells.uns
    with pytest.raises(ValueError, match="anchor_transport"):  # intrinsic mode reads no anchoring option
        gx.tl.reconstruct(_two_view_cells(), two_view_model, anchor=None, anchor_transport=True, **_FAST)
    # where the default weight switches the expression off (another technology), the transport is off too
    other = _two_view_cells()
    layer = np.asarray(other.layers["gears_centered"])
    other.layers["gears_centered"] = layer[:, np.random.default_rng(0).permutation(layer.shape[1])]
    gx.tl.reconstruct(other, two_view_model, anchor="reference", anchor_transport=True, **_FAST)
    rec = other.uns["gears"]["anchor"]
    assert rec["expression_weight"] == 0.0
    assert rec["transport"].startswith("not used: the query's genes co-vary unlike")


def test_match_weights_pull_the_anchor_to_the_closest_matches():
    rng = np.random.default_rng(3)
    freq = rng.normal(size=(2, 8)) / 3
    spots = rng.uniform(0, 10, size=(600, 2))
    emb = np.c_[np.sin(spots @ freq), np.cos(spots @ freq)]
    cells = rng.uniform(1, 9, size=(300, 2))
    q = np.c_[np.sin(cells @ freq), np.cos(cells @ freq)] + 0.05 * rng.normal(size=(300, 16))
    plain = gx.geometry.match_reference(q, emb, spots, k=60, temperature=None)
    np.testing.assert_allclose(plain.anchors, spots[plain.indices].mean(1))
    np.testing.assert_allclose(plain.weights, 1 / 60)
    weighted = gx.geometry.match_reference(q, emb, spots, k=60)
    np.testing.assert_allclose(weighted.weights.sum(1), 1.0)
    assert (np.diff(weighted.weights, axis=1) <= 1e-12).all()  # the most similar match weighs most
    np.testing.assert_array_equal(weighted.indices, plain.indices)  # same matches, same spread
    np.testing.assert_allclose(weighted.spread, plain.spread)
    err = {name: np.linalg.norm(m.anchors - cells, axis=1).mean() for name, m in (("w", weighted), ("p", plain))}
    assert err["w"] < 0.7 * err["p"]  # the 60 matches reach far; their best ones sit closer to the cell
    cold = gx.geometry.match_reference(q, emb, spots, k=60, temperature=1e-5)  # the best match alone
    np.testing.assert_allclose(cold.anchors, spots[cold.indices[:, 0]], atol=0.05)  # (near-ties share weight)
    with pytest.raises(ValueError, match="temperature"):
        gx.geometry.match_reference(q, emb, spots, k=5, temperature=0)


@pytest.mark.parametrize("temperature", [None, 0.5])
def test_matches_computed_in_blocks_of_cells_equal_those_computed_at_once(monkeypatch, temperature):
    """The weights, anchors and spreads go through the cells in blocks (bounded memory at a million cells)."""
    import scipy.sparse as sp

    import gearsx.geometry._anchor as anchor

    rng = np.random.default_rng(4)
    spots = rng.uniform(0, 10, size=(200, 2))
    emb, cells = rng.normal(size=(200, 8)), rng.normal(size=(103, 8))
    expr, spot_expr = sp.random(103, 30, density=0.4, random_state=2, format="csr"), rng.normal(size=(200, 30))
    kw = {"k": 12, "temperature": temperature, "query_expression": expr, "reference_expression": spot_expr}
    whole = gx.geometry.match_reference(cells, emb, spots, **kw)
    monkeypatch.setattr(anchor, "_BLOCK", 10)  # eleven blocks, the last of three cells
    blocks = gx.geometry.match_reference(cells, emb, spots, **kw)
    for name in ("indices", "similarity", "weights", "anchors", "spread"):
        np.testing.assert_allclose(getattr(blocks, name), getattr(whole, name), rtol=1e-12, err_msg=name)
    # and each is what it says, from the matches themselves
    np.testing.assert_allclose(blocks.anchors, np.einsum("nk,nkd->nd", blocks.weights, spots[blocks.indices]))
    pts = spots[blocks.indices]
    np.testing.assert_allclose(blocks.spread, np.sqrt(((pts - pts.mean(1, keepdims=True)) ** 2).sum(-1).mean(1)))


def test_reconstruct_weighs_the_matches_at_its_temperature(two_view_model):
    def anchor_err(a):
        return float(np.median(np.linalg.norm(a.obsm["X_gears_anchor"] - a.obsm["spatial_gt"], axis=1)))

    plain = _two_view_cells()
    gx.tl.reconstruct(plain, two_view_model, anchor="reference", anchor_temperature=None, **_FAST)
    assert plain.uns["gears"]["anchor"]["temperature"] == "none"
    weighted = _two_view_cells()
    gx.tl.reconstruct(weighted, two_view_model, anchor="reference", **_FAST)
    assert weighted.uns["gears"]["anchor"]["temperature"] == 0.5
    assert weighted.uns["gears"]["reconstruct"]["params"]["anchor_temperature"] == 0.5
    assert anchor_err(weighted) < anchor_err(plain)  # 0.246 vs 0.263 here
    bad = _two_view_cells()
    with pytest.raises(ValueError, match="anchor_temperature"):
        gx.tl.reconstruct(bad, two_view_model, anchor="reference", anchor_temperature=-1, **_FAST)
    assert "gears" not in bad.uns  # untouched


def test_large_queries_decide_on_a_sample_and_anchor_every_cell(monkeypatch):
    """Above DECISION_SAMPLE cells the slide and the score come from a sample; the anchors do not."""
    import gearsx.tl._anchored as anchored

    st, sc = _reference_and_query()
    emb = np.asarray(st.obsm["X_gears"])
    rng = np.random.default_rng(5)
    ref = {  # slide s0: each embedding dimension permuted across the spots (no tissue of the query)
        "embedding": np.r_[gx.geometry.shuffled(emb, 1), emb],
        "coords": np.r_[st.obsm["spatial"], st.obsm["spatial"]],
        "slides": np.repeat([0, 1], len(emb)),
        "slide_names": np.array(["s0", "s1"]),
    }
    x = np.asarray(sc.obsm["X_gears"])
    kw = {"anchor": "auto", "reference_slide": None, "k": 20, "random_state": 0, "temperature": 0.5}
    full = anchored.plan_anchor(x, ref, **kw)
    monkeypatch.setattr(anchored, "DECISION_SAMPLE", len(x) // 4)
    part = anchored.plan_anchor(x, ref, **kw)
    assert (full.record["decision_cells"], part.record["decision_cells"]) == (len(x), len(x) // 4)
    assert full.record["slide"] == part.record["slide"] == "s1"  # the slide whose embedding is the tissue's
    assert part.anchored
    assert full.anchored
    assert abs(part.record["match_score"] - full.record["match_score"]) < 0.1
    np.testing.assert_allclose(part.anchors, full.anchors)  # every cell matched, as without the sample
    np.testing.assert_allclose(part.anchor_sd, full.anchor_sd, rtol=0.2)  # only the null's median differs
    # a query of another tissue: intrinsic on the sample's decision, no anchors for anyone
    other = anchored.plan_anchor(rng.normal(size=x.shape).astype(np.float32), ref, **kw)
    assert not other.anchored
    assert other.anchors is None


def test_local_alignments_equal_a_per_cell_weighted_procrustes():
    """The neighbourhood-sum fit against the direct fit of each cell's centred, weighted offsets."""
    from scipy.spatial import cKDTree

    from gearsx.geometry._anchor import _local_alignments

    rng = np.random.default_rng(3)
    y = rng.normal(size=(400, 2)) * 30 + 1e4  # far from the origin: the raw sums would cancel badly
    turn = np.array([[0.6, -0.8], [0.8, 0.6]])
    a = (y - 1e4) @ turn * 2.5 * np.r_[1, -1] + rng.normal(size=(400, 2)) * 3  # a reflected, turned, scaled copy
    w = rng.uniform(0.1, 1.0, 400)
    nbr = cKDTree(y).query(y, k=25)[1]
    maps, r2 = _local_alignments(y, a, w, nbr)
    for i in (0, 17, 399):
        yn, an, wn = y[nbr[i]], a[nbr[i]], w[nbr[i]][:, None]
        yc = yn - (wn * yn).sum(0) / wn.sum()
        ac = an - (wn * an).sum(0) / wn.sum()
        u, s, vt = np.linalg.svd((wn * ac).T @ yc)
        m = u @ vt * s.sum() / (wn * yc**2).sum()
        resid = (wn * (ac - yc @ m.T) ** 2).sum()
        np.testing.assert_allclose(maps[i], m, atol=1e-9)
        np.testing.assert_allclose(r2[i], 1 - resid / (wn * ac**2).sum(), atol=1e-9)
    assert np.median(r2) > 0.9  # the copy is locally the same up to noise
    det = np.linalg.det(maps)
    assert (det < 0).all()  # the reflection recovered
    assert abs(np.median(np.sqrt(-det)) - 2.5) < 0.1  # and the scale


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"batch_size": 0}, "`batch_size` must be an integer >= 1"),
        ({"refine_steps": -1}, "`refine_steps` must be an integer >= 0"),
        ({"coverage": 0}, "`coverage` must be an integer >= 1"),
        ({"jaccard": 1.5}, "jaccard"),
        ({"key_added": "a/b"}, "key_added"),
    ],
)
def test_options_are_checked_before_the_anchors_are_matched(toy_model, monkeypatch, option, match):
    """A bad option fails at once, not after the match (minutes on a large query, and its warnings)."""
    from gearsx.tl import _anchored

    def no_match(*args, **kwargs):
        msg = "the anchors were matched before the options were checked"
        raise AssertionError(msg)

    monkeypatch.setattr(_anchored, "plan_anchor", no_match)
    _, sc = _reference_and_query()
    with pytest.raises(ValueError, match=match):
        gx.tl.reconstruct(sc, toy_model, anchor="reference", **{**_FAST, **option})
