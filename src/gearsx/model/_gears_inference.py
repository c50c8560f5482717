"""Inference of the GEARS model: embeddings in, patch geometries and attention out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from gearsx._anndata import check_obsm_key
from gearsx._utils import check_positions, check_positive_int, check_positive_number, checks_flags

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData
    from distributed import Client

__all__ = ["GearsInferenceMixin"]

logger = logging.getLogger(__name__)


class GearsInferenceMixin:
    """What a trained :class:`~gearsx.model.GEARS` predicts (in the style of scvi-tools' model mixins)."""

    @property
    def n_input(self) -> int:
        """Width of the embeddings the model reads (the encoder's ``n_latent``)."""
        return int(self.module.inp[0].in_features)

    @property
    def structure(self) -> str | None:
        """What follows the model's generator, ``None`` (nothing, the default), ``'refiner'`` (the diffusion refiner) or ``'ipa'``."""
        return self._module_kwargs["structure"]  # always recorded (``GEARS._upgrade_saved`` fills in old saves)

    def check_embedding(self, x: np.ndarray, *, name: str = "embeddings") -> np.ndarray:
        """Validate query embeddings for this model and return them as float32.

        Parameters
        ----------
        x
            ``(n_obs, n_input)`` array.
        name
            How the array is named in error messages.

        Returns
        -------
        The embeddings as a float32 array; a ValueError names ``name`` when the width is not the
        model's or values are NaN/inf.
        """
        emb = np.asarray(x, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.n_input:
            msg = (
                f"{name} has shape {emb.shape}, but the model expects {self.n_input} embedding dimensions: embed "
                "the cells with the encoder the model was trained on (same genes, same encoder)."
            )
            raise ValueError(msg)
        if not np.isfinite(emb).all():
            msg = f"{name} holds NaN or inf."
            raise ValueError(msg)
        return emb

    def _embedding(self, adata: AnnData | None = None) -> np.ndarray:
        if adata is None and self.adata is None:
            msg = (
                "This GEARS model was loaded without its ST data; pass the query (an AnnData with embeddings "
                "or an embedding array) explicitly."
            )
            raise ValueError(msg)
        if adata is None:
            return np.asarray(self.adata.obsm[self.setup_args["use_rep"]], dtype=np.float32)
        key = self.setup_args["use_rep"]
        check_obsm_key(adata, key, "use_rep", "for SC data run `gx.tl.fit_adapter(adata, encoder)`, which writes it")
        return np.asarray(adata.obsm[key], dtype=np.float32)

    # --- prediction -----------------------------------------------------------------------------
    def _sets(self, data, indices) -> tuple[np.ndarray, list[np.ndarray], bool]:
        """Return the validated embeddings and index sets of :meth:`predict_geometry` / :meth:`get_attention`."""
        self._check_if_trained()
        if data is None or not isinstance(data, np.ndarray):
            emb = self._embedding(data)
        else:
            emb = np.asarray(data, dtype=np.float32)
        emb = self.check_embedding(emb)
        # a 1-D array is one set even when empty (then refused below), not an empty list of sets
        single = (
            indices is None
            or (isinstance(indices, np.ndarray) and indices.ndim == 1)
            or (len(indices) > 0 and np.isscalar(indices[0]))
        )
        sets = [np.arange(len(emb))] if indices is None else [np.asarray(indices)] if single else list(indices)
        sets = [
            check_positions(s, len(emb), name=f"Set {i} of `indices`", min_size=3, unique=True)
            for i, s in enumerate(sets)
        ]
        return emb, sets, single

    @checks_flags
    def predict_geometry(
        self,
        data: AnnData | np.ndarray | None = None,
        indices: np.ndarray | Sequence[np.ndarray] | None = None,
        *,
        refine_steps: int = 4,
        sigma_start: float = 1.0,
        return_base: bool = False,
        n_components: int = 2,
        batch_size: int = 16,
        random_state: int = 0,
    ) -> np.ndarray | list[np.ndarray] | tuple[np.ndarray | list[np.ndarray], np.ndarray | list[np.ndarray]]:
        """Predict the intrinsic geometry of one or several sets of observations.

        Parameters
        ----------
        data
            ``None`` (the training ST data), an AnnData with embeddings in
            ``obsm[use_rep]`` (ST or adapted SC), or an embedding array ``(N, h)``.
        indices
            One set (a 1-D integer array) or several (a list of them); ``None`` is the
            whole of ``data`` as one set.
        refine_steps
            Refinement steps after the generator proposal (``0``: generator only), for a model
            built with ``structure='refiner'``; ignored without a refiner.
        sigma_start
            Starting noise of the refinement, in units of the residual scale ``s_d``.
        return_base
            Also return the generator-only coordinates.
        n_components
            Output dimension: the first principal axes of the ``d``-dimensional
            prediction, scaled to unit RMS norm (each set's own gauge).
        batch_size
            Sets per forward pass (sets are sorted by size to limit padding).
        random_state
            Seed of the refinement noise.

        Returns
        -------
        ``(n, n_components)`` coordinates for one set, or a list of them for several
        (in the order given); with ``return_base`` a pair ``(refined, base)``.
        """
        random_state = check_positive_int(random_state, name="random_state", minimum=0)
        from ._predict import predict_sets

        emb, sets, single = self._sets(data, indices)
        n_components = check_positive_int(n_components, name="n_components")
        if self.structure == "ipa" and n_components > 2:
            msg = f"structure='ipa' predicts 2-D coordinates; `n_components` must be 1 or 2, got {n_components}."
            raise ValueError(msg)
        if n_components > self.module.n_out:
            msg = (
                f"`n_components`={n_components} is more than the model's {self.module.n_out} output dimensions "
                "(`n_out` of gx.model.GEARS); pass n_components <= n_out."
            )
            raise ValueError(msg)
        refine_steps = check_positive_int(refine_steps, name="refine_steps", minimum=0)
        sigma_start = check_positive_number(sigma_start, name="sigma_start")
        batch_size = check_positive_int(batch_size, name="batch_size")
        out, base = predict_sets(
            self.module,
            emb,
            sets,
            refine_steps=refine_steps,
            sigma_start=sigma_start,
            n_components=n_components,
            batch_size=batch_size,
            random_state=random_state,
        )
        if single:
            out, base = out[0], base[0]
        return (out, base) if return_base else out

    @checks_flags
    def predict_patches(
        self,
        data: AnnData | np.ndarray,
        patches: Sequence[np.ndarray],
        *,
        refine_steps: int = 4,
        batch_size: int = 16,
        random_state: int = 0,
        client: Client | None = None,
        progress: bool | None = None,
    ) -> list[np.ndarray]:
        """Predict the geometry of many patches, streamed in chunks, in this process or on a dask cluster.

        The patch step of :func:`gearsx.tl.reconstruct`. Patches go in chunks of ``4 * batch_size``;
        each chunk's refinement noise is seeded with ``random_state`` plus the index of its first
        patch, so the result does not depend on where a chunk runs. With ``client`` the model's
        weights are sent to every worker once and each task carries only the embeddings of the
        cells its chunk holds (see :doc:`/scaling`).

        Parameters
        ----------
        data
            An AnnData with embeddings in ``obsm[use_rep]`` or an ``(N, h)`` embedding array.
        patches
            Index arrays into ``data``, one per patch (at least 3 cells each).
        refine_steps
            Refinement steps after the generator proposal (``0``: generator only), for a model
            built with ``structure='refiner'``; ignored without a refiner.
        batch_size
            Patches per forward pass.
        random_state
            Seed of the refinement noise.
        client
            A running :class:`distributed.Client`: run the chunks as tasks on its workers (on
            their CPUs). ``None``: in this process, on the model's device.
        progress
            Show a progress bar over patches (default: ``gx.settings.progress_bar``).

        Returns
        -------
        One ``(len(patch), 2)`` coordinate array per patch, in the order given.

        Examples
        --------
        >>> xy = geo.predict_patches(sc_adata.obsm["X_gears"], patches)  # doctest: +SKIP
        >>> from distributed import Client
        >>> xy = geo.predict_patches(sc_adata.obsm["X_gears"], patches, client=Client())  # doctest: +SKIP
        """
        random_state = check_positive_int(random_state, name="random_state", minimum=0)
        from gearsx._settings import settings
        from gearsx._utils import check_client, progress_bar

        from ._predict import predict_patches

        emb, sets, _ = self._sets(data, list(patches))
        refine_steps = check_positive_int(refine_steps, name="refine_steps", minimum=0)
        batch_size = check_positive_int(batch_size, name="batch_size")
        client = check_client(client)
        with progress_bar(
            total=len(sets),
            desc="predicting patches",
            unit="patch",
            enabled=settings.progress_bar if progress is None else progress,
        ) as bar:
            return predict_patches(
                self.module,
                emb,
                sets,
                refine_steps=refine_steps,
                batch_size=batch_size,
                random_state=random_state,
                client=client,
                bar=bar,
            )

    def get_attention(
        self,
        data: AnnData | np.ndarray | None = None,
        indices: np.ndarray | None = None,
        *,
        recycle: int | None = None,
        oracle_coords: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Attention weights of the structure module on one set of observations (``structure='ipa'``).

        Parameters
        ----------
        data
            As in :meth:`predict_geometry`.
        indices
            One set of at most 2,000 observations (``None``: all of ``data``).
        recycle
            One recycle (0-based; negative counts from the end) or ``None`` for all.
        oracle_coords
            True coordinates ``(len(indices), 2)`` of the set: evaluate the oracle path (true
            spatial kNN edges, gate off) instead of the inference path (candidate graph + gate).

        Returns
        -------
        ``{'attention': (R, H, n, n) or (H, n, n), 'graph': (n, n) bool, 'coords': (R, n, 2) or
        (n, 2), 'indices': (n,)}`` — rows are queries, columns keys; ``graph`` holds the edges
        attention was allowed on (self-loops are always allowed).

        Examples
        --------
        >>> att = geo.get_attention(adata_st, indices=np.arange(256), recycle=-1)  # doctest: +SKIP
        >>> att["attention"].mean(0)[0]  # query 0's attention, averaged over heads  # doctest: +SKIP
        """
        import torch

        if self._module_kwargs.get("structure") != "ipa":
            structure = self._module_kwargs.get("structure")
            has = (
                "the refiner (structure='refiner')"
                if structure == "refiner"
                else "the generator alone (structure=None)"
            )
            msg = f"get_attention needs a model built with structure='ipa'; this one has {has}."
            raise ValueError(msg)
        emb, sets, single = self._sets(data, indices)
        if not single:
            msg = "`indices` must be one set (a 1-D index array) for get_attention."
            raise ValueError(msg)
        idx = sets[0]
        if len(idx) > 2000:
            msg = f"get_attention returns dense (n x n) weights; use at most 2,000 observations, got {len(idx)}."
            raise ValueError(msg)
        coords = None
        if oracle_coords is not None:
            coords = np.asarray(oracle_coords, dtype=np.float32)
            if coords.shape != (len(idx), 2) or not np.isfinite(coords).all():
                msg = f"`oracle_coords` must be finite with shape ({len(idx)}, 2); got {coords.shape}."
                raise ValueError(msg)
            coords = torch.as_tensor(coords - coords.mean(0), device=self.device)[None]
        n_rec = self._module_kwargs["n_recycles"]
        if recycle is not None and not -n_rec <= recycle < n_rec:
            msg = f"`recycle` must be in [{-n_rec}, {n_rec}) for {n_rec} recycles; got {recycle}."
            raise ValueError(msg)
        h = torch.as_tensor(emb[idx], device=self.device)[None]
        mask = torch.ones(1, len(idx), dtype=torch.bool, device=self.device)
        self.module.eval()
        with torch.inference_mode():
            xs, attns, adj = self.module.attention(h, mask, coords=coords)
        att = torch.stack(attns)[:, 0].double().cpu().numpy()
        xy = torch.stack(xs)[:, 0].double().cpu().numpy()
        if recycle is not None:
            att, xy = att[recycle], xy[recycle]
        return {"attention": att, "graph": adj[0].cpu().numpy(), "coords": xy, "indices": idx}

    # --- reference (for anchored reconstruction) ------------------------------------------------
