from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from gearsx._anndata import (
    check_distinct_positions,
    check_log_expression,
    check_obsm_key,
    dense_row_batches,
    get_obs_rep,
    prepared_as_given,
    resolve_slide_key,
)
from gearsx._keys import Key
from gearsx._utils import (
    check_nonnegative_number,
    check_positions,
    check_positive_int,
    check_positive_number,
    checks_flags,
    doc_params,
    module_fingerprint,
    renamed_arguments,
)
from gearsx.geometry._knn import group_knn

from ._base import MODEL_ATTRIBUTES, GearsModelBase, _check_var_names

if TYPE_CHECKING:
    from anndata import AnnData

    from ._adapter import SCAdapter

__all__ = ["SharedEncoder"]

logger = logging.getLogger(__name__)

#: The default schedule (``max_epochs=None``): about this many optimisation steps, ...
STEPS_TARGET = 1500
#: ... in at most this many epochs: more passes over a small reference overfit it (see :doc:`/benchmarks`).
MAX_EPOCHS = 250


def default_epochs(n_obs: int, batch_size: int) -> int:
    """Epochs of the default schedule: about :data:`STEPS_TARGET` steps of ``batch_size``, within 20 to :data:`MAX_EPOCHS`."""
    steps = max(1, n_obs // batch_size)
    return int(np.clip(round(STEPS_TARGET / steps), 20, MAX_EPOCHS))


_LAYER_HINT = "for gears_centered run gx.pp.mean_center_per_slide first (slide_key=None for one slide or SC data)"


def _dense_layer(adata: AnnData, layer: str | None) -> np.ndarray:
    """Return the encoder's input, ``layers[layer]`` (or ``X``), as a dense, finite float32 matrix."""
    return get_obs_rep(adata, layer=layer, dense=True, dtype=np.float32, hint=_LAYER_HINT)


def _spatial_neighbours(coords: np.ndarray, slides: np.ndarray, k: int, slide_names) -> np.ndarray:
    """``k`` physical nearest neighbours of every observation within its own slide (global indices)."""
    out = np.empty((len(coords), k), dtype=np.int64)
    for rows, nbr in group_knn(coords, np.asarray(slide_names)[slides], k, name="n_spatial_neighbors"):
        out[rows] = nbr
    return out


@doc_params(model_attributes=MODEL_ATTRIBUTES)
class SharedEncoder(GearsModelBase):
    """Shared expression encoder of GEARS (see :ref:`gears-encoder`), in the style of scvi-tools models.

    An MLP (default ``G -> 512 -> 256 -> 128``, LayerNorm + GELU) trained on the
    mean-centred expression of the ST slides with VICReg on two augmented views and a
    spatial InfoNCE whose positives are each spot's physical nearest neighbours in its
    own slide (coordinates only pick pairs; they are never an input). An adversarial
    slide discriminator is available but off by default.

    Parameters
    ----------
    adata
        ST data registered with :meth:`setup_anndata`.
    n_hidden
        Hidden widths.
    n_latent
        Embedding width.
    adversarial
        Train a gradient-reversal slide discriminator as well.

    Attributes
    ----------
    {model_attributes}

    Examples
    --------
    >>> import gearsx as gx
    >>> st, sc = gx.datasets.simulate_tissue(n_cells_per_slide=3000, random_state=0)
    >>> st, sc = gx.pp.prepare(st, sc, slide_key="slide", n_top_genes=100)
    >>> gx.pp.mean_center_per_slide(st, slide_key="slide")
    >>> gx.model.SharedEncoder.setup_anndata(st, layer="gears_centered", slide_key="slide")
    >>> model = gx.model.SharedEncoder(st, n_latent=16)
    >>> model.train(max_epochs=2, progress=False)
    >>> model.get_latent_representation().shape[1]
    16
    """

    @checks_flags
    def __init__(
        self, adata: AnnData, *, n_hidden: tuple[int, ...] = (512, 256), n_latent: int = 128, adversarial: bool = False
    ) -> None:
        from gearsx.module import SharedEncoderModule

        module_kwargs: dict[str, Any] = {
            "n_hidden": [check_positive_int(h, name="n_hidden") for h in n_hidden],
            "n_latent": check_positive_int(n_latent, name="n_latent"),
            "adversarial": bool(adversarial),
        }
        if not module_kwargs["n_hidden"]:
            msg = "`n_hidden` must name at least one hidden layer width, e.g. (512, 256)."
            raise ValueError(msg)
        super().__init__(adata)
        n_slides = len(self._slide_names())
        self._module_kwargs = module_kwargs
        self.module = SharedEncoderModule(
            adata.n_vars, tuple(n_hidden), n_latent, n_slides=n_slides, adversarial=adversarial
        )
        self._adapter = None

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        *,
        layer: str | None = Key.centered_layer,
        slide_key: str | None = None,
        spatial_key: str = Key.spatial,
    ) -> None:
        """Register ``adata`` (expression layer, slide labels, coordinates) for :class:`SharedEncoder`.

        Parameters
        ----------
        adata
            ST data.
        layer
            Expression layer (default the mean-centred ``'gears_centered'``); ``None`` uses ``X``.
        slide_key
            ``obs`` column with the slide; ``None``: the column recorded by an earlier step
            (:func:`gearsx.pp.prepare`, :func:`gearsx.pp.mean_center_per_slide`), else a single slide.
        spatial_key
            ``obsm`` key of the coordinates (used to pick InfoNCE positives only).
        """
        # spots of different slides share one coordinate frame: pooled, they would be each other's positives
        slide_key = resolve_slide_key(adata, slide_key)
        check_obsm_key(
            adata, spatial_key, "spatial_key", "the encoder needs spot coordinates to pick spatial positives"
        )
        x = _dense_layer(adata, layer)  # validates the layer and NaN before anything is registered
        check_log_expression(
            x,
            f"layers[{layer!r}]" if layer else "X",
            "the encoder reads log-normalised (and per-slide centred) expression: pass layer='gears_centered' "
            "(gx.pp.prepare, then gx.pp.mean_center_per_slide)",
            as_given=prepared_as_given(adata, layer),
        )
        coords = np.asarray(adata.obsm[spatial_key])
        if not np.isfinite(coords).all():
            msg = f"`adata.obsm[{spatial_key!r}]` holds NaN or inf coordinates."
            raise ValueError(msg)
        slides = adata.obs[slide_key].astype(str).to_numpy() if slide_key is not None else None
        check_distinct_positions(coords, slides, spatial_key=spatial_key, slide_key=slide_key)
        cls._register(adata, {"layer": layer, "slide_key": slide_key, "spatial_key": spatial_key})

    @renamed_arguments(enable_progress_bar="progress", k_spatial="n_spatial_neighbors")
    @checks_flags
    def train(
        self,
        max_epochs: int | None = None,
        *,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        n_spatial_neighbors: int = 8,
        temperature: float = 0.1,
        w_nce: float = 5.0,
        accelerator: str = "auto",
        devices: int | str = "auto",
        random_state: int = 0,
        early_stopping: bool = False,
        progress: bool | None = None,
    ) -> None:
        """Train the encoder.

        Parameters
        ----------
        max_epochs
            Number of epochs; ``None`` aims at about 1,500 optimisation steps in 20 to 250 epochs (more
            passes over a reference of a few hundred spots overfit it: the query cells were placed less
            well, see :doc:`/benchmarks`).
        batch_size
            Spots per batch; every batch comes from a single slide, and each spot brings one
            physical neighbour as its positive.
        lr, weight_decay
            AdamW settings.
        n_spatial_neighbors
            Physical neighbours per spot (within its slide) from which positives are drawn
            (formerly ``k_spatial``).
        temperature
            InfoNCE temperature (above 0).
        w_nce
            Weight of the InfoNCE term (VICReg weights are 25, 25, 1). The default 5 keeps
            embedding neighbours spatially local (on the simulator, markedly more of each spot's
            20 embedding neighbours are physical neighbours than with 1).
        accelerator, devices
            ``'auto'`` uses CUDA when available.
        random_state
            Seed of initialisation, shuffling, positives and augmentations.
        early_stopping
            Not supported yet (there is no validation loss); ``True`` raises.
        progress
            One progress bar, updated per epoch (default: ``gx.settings.progress_bar``).
        """
        random_state = check_positive_int(random_state, name="random_state", minimum=0)
        if early_stopping:
            msg = "early_stopping is not supported by SharedEncoder yet (it has no validation objective)."
            raise NotImplementedError(msg)
        batch_size = check_positive_int(batch_size, name="batch_size", minimum=2)
        n_spatial_neighbors = check_positive_int(n_spatial_neighbors, name="n_spatial_neighbors")
        for name, value in (("lr", lr), ("temperature", temperature)):
            check_positive_number(value, name=name)
        for name, value in (("weight_decay", weight_decay), ("w_nce", w_nce)):
            check_nonnegative_number(value, name=name)
        x = _dense_layer(self.adata, self.setup_args["layer"])
        slides = self._slide_codes()
        coords = self._coords()
        neighbours = _spatial_neighbours(coords, slides, n_spatial_neighbors, self._slide_names())
        n = len(x)
        if max_epochs is None:
            max_epochs = default_epochs(n, batch_size)
        max_epochs = check_positive_int(max_epochs, name="max_epochs")
        from gearsx.train import EncoderTrainingPlan, SlideBatches

        loader = SlideBatches(x, neighbours, slides, min(batch_size, n), random_state)
        logger.info(
            "SharedEncoder: training on %d spots of %d slide(s), %d genes; %d epochs",
            n,
            len(set(slides)),
            x.shape[1],
            max_epochs,
        )
        plan = EncoderTrainingPlan(
            self.module, lr=lr, weight_decay=weight_decay, loss_kwargs={"temperature": temperature, "w_nce": w_nce}
        )
        self._fit_lightning(
            plan,
            loader,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            progress=progress,
            random_state=random_state,
        )
        self.train_params_ = {
            "max_epochs": max_epochs,
            "batch_size": batch_size,
            "lr": lr,
            "n_spatial_neighbors": n_spatial_neighbors,
            "temperature": temperature,
            "w_nce": w_nce,
            "random_state": random_state,
        }

    @checks_flags
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        *,
        indices: np.ndarray | None = None,
        batch_size: int | None = None,
        layer: str | None | bool = True,
        adapt: bool = False,
        representation: Literal["embedding", "backbone"] = "embedding",
    ) -> np.ndarray:
        """Embeddings of ``adata`` (default: the training data) as a numpy array.

        Parameters
        ----------
        adata
            Any AnnData with the model's genes in the same order (ST or SC).
        indices
            Integer positions of a subset of observations (for a boolean mask, ``np.flatnonzero(mask)``).
        batch_size
            Rows per forward pass (default 4096).
        layer
            Expression layer; ``True`` (default) uses the registered one.
        adapt
            Apply the SC adapter fitted by :func:`gearsx.tl.fit_adapter`.
        representation
            ``'embedding'``: the ``n_latent``-wide output that VICReg and InfoNCE are computed on
            (``obsm['X_gears']``, the input of the geometry model). ``'backbone'``: the last
            hidden layer (``n_hidden[-1]`` wide) before the final projection, the
            representation for spatial domains (``obsm['X_gears_backbone']``): as in
            self-supervised learning generally (VICReg, SimCLR), the layer before the projection
            transfers better to other tasks (see :ref:`gears-domains`; figures in
            :doc:`/benchmarks`).

        Returns
        -------
        ``(n_obs, n_latent)`` (or ``(n_obs, n_hidden[-1])``) float32 array. ``adata`` is not modified.
        """
        if representation not in ("embedding", "backbone"):
            msg = f"`representation` must be 'embedding' or 'backbone'; got {representation!r}."
            raise ValueError(msg)
        if adapt and representation == "backbone":
            msg = "`adapt=True` maps the embedding only; the SC adapter is not defined on the backbone."
            raise ValueError(msg)
        return self.get_representations(
            adata, (representation,), indices=indices, batch_size=batch_size, layer=layer, adapt=adapt
        )[representation]

    @checks_flags
    def get_representations(
        self,
        adata: AnnData | None,
        which: tuple[str, ...],
        *,
        indices: np.ndarray | None = None,
        batch_size: int | None = None,
        layer: str | None | bool = True,
        adapt: bool = False,
    ) -> dict[str, np.ndarray]:
        """Compute several representations in one pass over the data (the embedding projects the backbone).

        Parameters
        ----------
        adata
            Data with the model's genes (default: the training data).
        which
            Any of ``'embedding'`` and ``'backbone'`` (see :meth:`get_latent_representation`).
        indices, batch_size, layer, adapt
            As in :meth:`get_latent_representation`.

        Returns
        -------
        dict
            ``{name: (n_obs, width) array}`` for each name in ``which``.
        """
        unknown = set(which) - {"embedding", "backbone"}
        if unknown:
            msg = f"`which` may name 'embedding' and 'backbone' only; got {sorted(unknown)}."
            raise ValueError(msg)
        import torch

        self._check_if_trained()
        if adapt and self._adapter is None:
            msg = "No adapter fitted; run gx.tl.fit_adapter(adata_sc, model) first."
            raise RuntimeError(msg)
        adata = self.adata if adata is None else adata
        _check_var_names(adata, self.adata.var_names)
        if indices is not None:
            indices = check_positions(indices, adata.n_obs, name="`indices`")
        if batch_size is not None:
            batch_size = check_positive_int(batch_size, name="batch_size")
        layer = self.setup_args["layer"] if layer is True else layer
        x = get_obs_rep(adata, layer=layer, arg="layer", hint=_LAYER_HINT)  # as stored: sparse, backed or dask
        source = f"layers[{layer!r}]" if layer else "X"
        dev = self.device
        self.module.eval()
        out: dict[str, list[np.ndarray]] = {name: [] for name in which}
        with torch.inference_mode():
            # one dense block at a time (at least one, possibly empty, so empty input keeps the width)
            for block in dense_row_batches(x, batch_size or 4096, indices=indices, name=source):
                h = self.module.backbone(torch.as_tensor(block, device=dev))
                if "backbone" in out:
                    out["backbone"].append(h.float().cpu().numpy())
                if "embedding" in out:
                    z = self.module.project(h)
                    if adapt:
                        z = self._adapter.module.to(dev)(z)
                    out["embedding"].append(z.float().cpu().numpy())
        return {name: np.concatenate(parts) for name, parts in out.items()}

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the trained weights, 16 hex digits of a SHA-256 over the module's parameters and buffers.

        The same for an encoder and its saved and reloaded copy, or a refit with the same data and
        seed on the same device; different after any other refit (the attached adapter does not
        count). :func:`gearsx.tl.fit_encoder` and :func:`gearsx.tl.fit_adapter` record it as
        ``encoder_id`` in ``uns``, :meth:`gearsx.model.GEARS.train` keeps the ST data's, and
        :func:`gearsx.tl.reconstruct` refuses cells adapted to another encoder than the one whose
        embeddings trained the model (their embedding spaces differ even at equal widths).
        """
        return module_fingerprint(self.module)

    # --- the SC adapter ---------------------------------------------------------------------------
    @property
    def n_latent(self) -> int:
        """Width of the embedding."""
        return int(self._module_kwargs["n_latent"])

    @property
    def adapter(self) -> SCAdapter | None:
        """The fitted :class:`~gearsx.model.SCAdapter` attached to this encoder (``None`` before :func:`gearsx.tl.fit_adapter`).

        It is saved with the encoder and applied by ``get_latent_representation(..., adapt=True)``.
        """
        return self._adapter

    @adapter.setter
    def adapter(self, adapter: SCAdapter | None) -> None:
        from ._adapter import SCAdapter

        if adapter is not None and (not isinstance(adapter, SCAdapter) or adapter.encoder is not self):
            msg = "`adapter` must be a gx.model.SCAdapter fitted on this encoder (SCAdapter(encoder).fit(adata_sc))."
            raise ValueError(msg)
        if adapter is not None and not adapter.is_fitted:
            msg = "`adapter` is not fitted; call `.fit(adata_sc)` first."
            raise ValueError(msg)
        self._adapter = adapter

    def _extra_state(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"slides": self._slide_names(), "train_params": getattr(self, "train_params_", {})}
        if self._adapter is not None:
            tensors, meta = self._adapter.state()
            extra["tensors"] = {f"adapter.{k}": v for k, v in tensors.items()}
            extra["adapter"] = meta
        return extra

    def _load_extra_state(self, meta: dict, state: dict) -> None:
        from ._adapter import SCAdapter

        self.train_params_ = meta.get("train_params", {})
        if "adapter" in meta:
            tensors = {k[len("adapter.") :]: v for k, v in state.items() if k.startswith("adapter.")}
            self._adapter = SCAdapter.from_state(self, tensors, meta["adapter"])
