import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

import gearsx as gx
from tests.conftest import shared_file

FULL = (3000, 4000)  # rows, cols of the full-resolution image
SCALES = {"fullres": 1.0, "hires": 0.2, "lowres": 0.05}


def _visium_like(rng):
    inner = rng.uniform([50, 50], [FULL[1] - 50, FULL[0] - 50], (40, 2))
    border = np.array([[0.0, 0.0], [FULL[1] - 1, FULL[0] - 1], [3.0, FULL[0] / 2], [FULL[1] / 2, 1.0]])
    adata = ad.AnnData(np.zeros((44, 1), dtype=np.float32))
    adata.obsm["spatial"] = np.vstack([inner, border])  # (x, y) = (col, row), full resolution
    adata.uns["spatial"] = {
        "lib": {
            "images": {},
            "scalefactors": {"tissue_hires_scalef": SCALES["hires"], "tissue_lowres_scalef": SCALES["lowres"]},
        }
    }
    return adata


def _marker_image(adata, scale):
    shape = (int(np.ceil(FULL[0] * scale)), int(np.ceil(FULL[1] * scale)))
    img = np.zeros((*shape, 1), dtype=np.float32)
    pix = np.rint(adata.obsm["spatial"] * scale).astype(int)
    for i, (c, r) in enumerate(pix):
        img[min(r, shape[0] - 1), min(c, shape[1] - 1), 0] = i + 1  # spot i's marker carries its id
    return img


@pytest.mark.parametrize("resolution", ["fullres", "hires", "lowres"])
@pytest.mark.parametrize("size", [16, 15])
def test_tiles_are_centred_on_spots(rng, tmp_path, request, resolution, size):
    adata = _visium_like(rng)
    img = _marker_image(adata, SCALES[resolution])
    if resolution != "fullres":
        adata.uns["spatial"]["lib"]["images"][resolution] = img
        tiles = gx.pp.extract_patches(adata, resolution=resolution, size=size, path=tmp_path / "t.npy", pad_value=-1)
    else:  # the default path: a new temporary folder of its own (removed below)
        tiles = gx.pp.extract_patches(adata, resolution="fullres", image=img, size=size, pad_value=-1)
        folder = Path(adata.uns["gears_patches"]["path"]).parent
        assert folder.name.startswith("gearsx_patches_")
        assert list(folder.iterdir()) == [folder / "gears_patches.npy"]
        request.addfinalizer(lambda: shutil.rmtree(folder))
    assert tiles.shape == (44, size, size, 1)
    for i in range(44):
        pos = np.argwhere(tiles[i, :, :, 0] == i + 1)
        assert len(pos) == 1, f"spot {i}: marker missing from its tile"
        assert np.abs(pos[0] - size // 2).max() <= 1, f"spot {i}: marker at {pos[0]}, centre {size // 2}"
    # border tiles are padded, not shifted
    assert (tiles[40] == -1).any()
    assert adata.uns["gears_patches"]["scalef"] == SCALES[resolution]


def test_several_slides_are_each_cut_from_their_own_image(rng, tmp_path):
    """Two slides (one pixel frame each) with their own hires images and scale factors, in one AnnData.

    Each spot's marker (slide A: its id; slide B: 100 + its id) must sit at its tile's centre: every
    slide is cut from its own image at its own scale. ``library_id`` (one slide's image) used to cut
    every slide's spots from that image; it is now an error, as is a slide without an image.
    """
    a, b = _visium_like(rng), _visium_like(rng)
    two = ad.concat([a, b], label="library_id", keys=["A", "B"], index_unique="-")
    two.obsm["spatial"] = np.vstack([a.obsm["spatial"], b.obsm["spatial"]])
    image_a, image_b = _marker_image(a, 0.2), _marker_image(b, 0.1) + 100 * (_marker_image(b, 0.1) > 0)
    two.uns["spatial"] = {
        "A": {"images": {"hires": image_a}, "scalefactors": {"tissue_hires_scalef": 0.2}},
        "B": {"images": {"hires": image_b}, "scalefactors": {"tissue_hires_scalef": 0.1}},
    }
    tiles = gx.pp.extract_patches(two, resolution="hires", size=15, path=tmp_path / "t.npy", pad_value=-1)
    for i in range(40):  # the inner spots of each slide
        for row, marker in ((i, i + 1), (44 + i, 100 + i + 1)):
            pos = np.argwhere(tiles[row, :, :, 0] == marker)
            assert len(pos) == 1, f"row {row}: marker {marker} missing from its tile"
            assert np.abs(pos[0] - 7).max() <= 1
    record = two.uns["gears_patches"]
    assert list(record["params"]["library_id"]) == ["A", "B"]
    np.testing.assert_allclose(record["scalef"], [0.2, 0.1])
    with pytest.raises(ValueError, match="library_id=None"):
        gx.pp.extract_patches(two, library_id="A", resolution="hires", size=15, path=tmp_path / "u.npy")
    del two.uns["spatial"]["B"]
    with pytest.raises(KeyError, match=r"no library for \['B'\]"):
        gx.pp.extract_patches(two, resolution="hires", size=15, path=tmp_path / "v.npy")


def test_dlpfc_lowres_tiles_lie_on_tissue(tmp_path):
    adata = ad.read_h5ad(shared_file("dlpfc_visium_libd", "dlpfc_151673.h5ad"))
    tiles = gx.pp.extract_patches(adata, resolution="lowres", size=6, path=tmp_path / "right.npy")
    img = adata.uns["spatial"]["151673"]["images"]["lowres"].astype(float)
    background = np.median(np.concatenate([img[:20, :20].reshape(-1, 3), img[-20:, -20:].reshape(-1, 3)]).mean(1))
    on_spot = np.asarray(tiles, dtype=float).mean(axis=(1, 2, 3))
    # H&E tissue is darker than the empty glass around it.
    assert np.median(on_spot) < background - 20
    assert (on_spot < background - 5).mean() > 0.95
    # the classic bug (hires factor on the lowres image) would land off the image: all padding
    adata.uns["spatial"]["151673"]["scalefactors"]["tissue_lowres_scalef"] = 0.150015
    wrong = np.asarray(
        gx.pp.extract_patches(adata, resolution="lowres", size=6, pad_value=255, path=tmp_path / "wrong.npy"),
        dtype=float,
    )
    assert (wrong.mean(axis=(1, 2, 3)) == 255).mean() > 0.9


def test_bad_input(rng):
    adata = _visium_like(rng)
    with pytest.raises(KeyError, match="No 'hires' image"):
        gx.pp.extract_patches(adata, resolution="hires")
    with pytest.raises(KeyError, match="available ids: \\['lib'\\]"):
        gx.pp.extract_patches(adata, library_id="other")
    del adata.uns["spatial"]["lib"]["scalefactors"]["tissue_lowres_scalef"]
    with pytest.raises(KeyError, match="tissue_lowres_scalef"):
        gx.pp.extract_patches(adata, resolution="lowres")
    with pytest.raises(ValueError, match="fullres"):
        gx.pp.extract_patches(adata, resolution="fullres")
    with pytest.raises(ValueError, match="resolution"):
        gx.pp.extract_patches(adata, resolution="medium")
    adata.uns["spatial"]["lib2"] = {}
    with pytest.raises(ValueError, match="several libraries"):
        gx.pp.extract_patches(adata, resolution="hires")
    del adata.obsm["spatial"]
    with pytest.raises(KeyError, match="spatial"):
        gx.pp.extract_patches(adata, resolution="fullres", image=np.zeros((5, 5)))


def test_tiles_are_refused_for_spots_reordered_since_they_were_cut(rng, tmp_path):
    """Tile ``i`` belongs to the spot that was row ``i`` when the tiles were cut.

    After the AnnData is reordered (same spots, same count) the recorded tiles would describe other spots:
    ``embed_patches`` refuses them and says to cut again; cut again, the embedding follows the new order.
    """
    adata = _visium_like(rng)
    adata.uns["spatial"]["lib"]["images"]["lowres"] = rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)
    adata.uns["spatial"]["lib"]["scalefactors"]["tissue_lowres_scalef"] = 0.05
    gx.pp.extract_patches(adata, resolution="lowres", size=8, path=tmp_path / "tiles.npy")
    pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    gx.tl.embed_patches(adata, pool, progress=False)
    order = np.random.default_rng(0).permutation(adata.n_obs)
    moved = adata[order].copy()
    with pytest.raises(ValueError, match="extract_patches again"):
        gx.tl.embed_patches(moved, pool, progress=False)
    assert "X_image" not in moved.obsm or np.allclose(moved.obsm["X_image"], adata.obsm["X_image"][order])
    gx.pp.extract_patches(moved, resolution="lowres", size=8, path=tmp_path / "moved.npy")
    gx.tl.embed_patches(moved, pool, progress=False)
    np.testing.assert_allclose(moved.obsm["X_image"], adata.obsm["X_image"][order])


def test_embed_patches_and_cache(rng, tmp_path, caplog):
    adata = _visium_like(rng)
    img = rng.integers(0, 255, (*FULL, 3), dtype=np.uint8)[::10, ::10]
    adata.uns["spatial"]["lib"]["images"]["lowres"] = img
    adata.uns["spatial"]["lib"]["scalefactors"]["tissue_lowres_scalef"] = 0.1
    tiles = gx.pp.extract_patches(adata, resolution="lowres", size=8, path=tmp_path / "tiles.npy")
    enc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    cache = tmp_path / "emb.npy"
    gx.tl.embed_patches(adata, enc, batch_size=7, cache=cache, accelerator="cpu", progress=False)
    emb = adata.obsm["X_image"]
    assert emb.shape == (44, 4)
    with torch.inference_mode():
        ref = enc(torch.as_tensor(np.asarray(tiles)).permute(0, 3, 1, 2).float() / 255).numpy()
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-6)
    assert cache.exists()
    # the cache is reused (raw, un-normalised embeddings) by the same encoder on the same tiles
    other = adata.copy()
    gx.tl.embed_patches(other, enc, cache=cache, progress=False)
    np.testing.assert_array_equal(other.obsm["X_image"], emb)
    assert other.uns["X_image"]["params"]["from_cache"]
    # ... and never by another encoder, other tiles or another transform: recomputed, with the reason
    for kw, why in (
        ({"encoder": torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())}, "other encoder weights"),
        ({"patches": np.asarray(tiles)[::-1].copy()}, "other tiles"),
        ({"transform": torch.nn.Identity()}, "another transform"),
    ):
        call = {"encoder": enc, **kw}
        again = adata.copy()
        with caplog.at_level("WARNING", logger="gearsx"):
            gx.tl.embed_patches(again, call.pop("encoder"), cache=cache, progress=False, **call)
        assert why in caplog.text
        assert not again.uns["X_image"]["params"]["from_cache"]
        caplog.clear()
        gx.tl.embed_patches(adata, enc, cache=cache, progress=False)  # the original again (rewrites the cache)
    with torch.inference_mode():
        flipped = enc(torch.as_tensor(np.asarray(tiles)[::-1].copy()).permute(0, 3, 1, 2).float() / 255).numpy()
    gx.tl.embed_patches(again, enc, patches=np.asarray(tiles)[::-1].copy(), cache=cache, progress=False)
    np.testing.assert_allclose(again.obsm["X_image"], flipped, rtol=1e-5, atol=1e-6)  # not the stale rows
    # a cache without its record (an older gearsx) is recomputed, not trusted
    gx.tl.embed_patches(adata, enc, cache=cache, progress=False)
    (tmp_path / "emb.npy.json").unlink()
    with caplog.at_level("WARNING", logger="gearsx"):
        gx.tl.embed_patches(other, enc, cache=cache, progress=False)
    assert "no record of what made it" in caplog.text
    # tiles whose values the [0, 1] scaling would get wrong
    with pytest.raises(ValueError, match="values up to 254"):
        gx.tl.embed_patches(adata, enc, patches=np.asarray(tiles).astype(np.float32), progress=False)
    with pytest.raises(ValueError, match="uint16"):
        gx.tl.embed_patches(adata, enc, patches=np.asarray(tiles).astype(np.uint16), progress=False)
    gx.tl.embed_patches(other, enc, patches=np.asarray(tiles).astype(np.float32) / 255, progress=False)
    np.testing.assert_allclose(other.obsm["X_image"], emb, rtol=1e-5, atol=1e-6)  # float in [0, 1] == uint8
    with pytest.raises(KeyError, match="extract_patches"):
        gx.tl.embed_patches(ad.AnnData(np.zeros((3, 1), dtype=np.float32)), enc)
    with pytest.raises(ValueError, match="44 observations"):
        gx.tl.embed_patches(adata, enc, patches=np.zeros((3, 8, 8, 3), dtype=np.uint8))
