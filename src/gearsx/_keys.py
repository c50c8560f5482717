"""All AnnData key names used by gearsx, in one place (cf. scanpy's ``_keys.py``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Key"]


@dataclass(frozen=True)
class _Keys:
    spatial: str = "spatial"
    spatial_gt: str = "spatial_gt"
    slide: str = "slide"
    cell_type: str = "cell_type"
    domain: str = "domain"
    embedding: str = "X_gears"
    backbone: str = "X_gears_backbone"
    reconstruction: str = "X_gears_spatial"
    result: str = "gears"
    centered_layer: str = "gears_centered"
    counts_layer: str = "counts"
    pseudo_spots: str = "pseudo_spots"
    spot_cell_counts: str = "spot_cell_counts"
    n_cells: str = "n_cells"
    simulation: str = "gears_simulation"
    prepare: str = "gears_prepare"
    encoder: str = "gears_encoder"
    adapter: str = "gears_adapter"
    patches: str = "gears_patches"
    image: str = "X_image"
    domain_embedding: str = "X_gears_domain"

    def layout(self, key: str) -> str:
        """``obsm`` key of the layout written under ``key_added`` (``X_gears_spatial`` by default)."""
        return f"X_{key}_spatial"

    def intrinsic(self, key: str) -> str:
        """``obsm`` key of an anchored run's intrinsic (stitched) layout."""
        return f"X_{key}_intrinsic"

    def anchors(self, key: str) -> str:
        """``obsm`` key of an anchored run's anchor positions."""
        return f"X_{key}_anchor"

    def anchor_spots(self, key: str) -> str:
        """``obsm`` key of an anchored run's matched spots per cell (rows of its reference slide)."""
        return f"{key}_anchor_spots"

    def anchor_weights(self, key: str) -> str:
        """``obsm`` key of the weights of those matched spots in each cell's anchor."""
        return f"{key}_anchor_weights"

    def uncertainty(self, key: str) -> str:
        """``obs`` column of the per-cell positional uncertainty."""
        return f"{key}_uncertainty"

    def backbone_of(self, key: str) -> str:
        """``obsm`` key of the encoder's backbone representation written next to the embedding ``key``."""
        return f"{key}_backbone"

    def smoothed(self, key: str) -> str:
        """``obsm`` key of a spatially smoothed representation."""
        return f"{key}_smoothed"

    def colors(self, key: str) -> str:
        """``uns`` key of the colours of the categorical ``obs`` column ``key`` (scanpy's convention)."""
        return f"{key}_colors"

    def distances(self, key: str) -> str:
        """``obsp`` key of the distances written under ``key_added``."""
        return f"{key}_distances"

    def connectivities(self, key: str) -> str:
        """``obsp`` key of the connectivities written under ``key_added``."""
        return f"{key}_connectivities"


Key = _Keys()
