"""Tools: thin AnnData wrappers that run gearsx computations and write results to the usual slots."""

from ._attention import attention, attention_summary
from ._domain_embedding import domain_embedding
from ._domains import cluster_domains, domain_representation
from ._embed_patches import embed_patches
from ._encoder import fit_adapter, fit_encoder
from ._projection import project_groups
from ._reconstruct import reconstruct
from ._smooth import spatial_smooth
from ._stitch import stitch

__all__ = [
    "attention",
    "attention_summary",
    "cluster_domains",
    "domain_embedding",
    "domain_representation",
    "embed_patches",
    "fit_adapter",
    "fit_encoder",
    "project_groups",
    "reconstruct",
    "spatial_smooth",
    "stitch",
]
