from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from gearsx._anndata import check_distinct_positions, check_obsm_key, recorded_encoder_id, resolve_slide_key
from gearsx._keys import Key
from gearsx._utils import (
    check_nonnegative_number,
    check_positive_int,
    check_positive_number,
    checks_flags,
    doc_params,
    renamed_arguments,
)
from gearsx.geometry._minisets import MIN_MINISET

from ._base import MODEL_ATTRIBUTES, GearsModelBase
from ._gears_inference import GearsInferenceMixin

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["GEARS"]

logger = logging.getLogger(__name__)

_TARGETS = ("gram", "rw_stress")
#: Optimisation steps aimed at by ``GEARS.train(max_epochs=None)``.
_DEFAULT_STEPS = 160
#: Smallest miniset at ``train(n_min=None)``, or the smallest slide's training spots when fewer.
DEFAULT_N_MIN = 128


@doc_params(model_attributes=MODEL_ATTRIBUTES)
class GEARS(GearsInferenceMixin, GearsModelBase):
    """GEARS geometry model (see :ref:`gears-geometry-model`): a set generator, optionally refined (EDM or IPA-style).

    Learns, from ST slides, to map the embeddings of a *miniset* of spots (a local
    set of 128-384 spots) to their intrinsic geometry: coordinates up to rotation,
    reflection, translation and scale. It never sees coordinates as input, so the
    same network places dissociated SC cells once their embeddings live in the ST
    embedding space (:func:`gearsx.tl.fit_adapter`).

    The network is permutation-equivariant (Set Transformer ISAB blocks): a context
    encoder, a generator that proposes ``V_base`` (``n x d``, ``d = 32`` by default,
    over-complete). By default the proposal is the geometry; optionally
    (``structure='refiner'``) an EDM-preconditioned denoiser of the residual between the
    target Gram factor and ``V_base`` refines it at inference by a short deterministic
    refinement from moderate noise (``s_d`` by default; open-loop sampling from high noise
    collapses the scale). 2-D coordinates are the first two principal axes of the
    ``d``-dimensional output.

    Parameters
    ----------
    adata
        ST data with embeddings in ``obsm`` (see :meth:`setup_anndata`). If it is not
        registered yet, or any of the keys below is given, :meth:`setup_anndata` is
        called with them.
    use_rep, slide_key, spatial_key
        Passed to :meth:`setup_anndata`. Without ``slide_key`` (whether or not the other keys are
        given), the slide column recorded by :func:`gearsx.tl.fit_encoder` is taken; with no record
        the data are one slide (a warning names ``obs['slide']``, ``obs['library_id']`` or a similar
        column when it holds several values). A ``slide_key`` that puts slides of the recorded column
        together (e.g. a donor of several slides) is taken, with a warning.
    targets
        ``'gram'`` (default: Procrustes regression to the Gram factor, Gram and
        log-scale losses) or ``'rw_stress'`` (the generator is trained with
        ``L_geo = L_RW + 0.1 L_stress``; its targets are built per miniset on the CPU, so
        training takes 6-7 times as long, and without an anchor it placed query cells worse
        than the default on Spearman and Stress-1 on three benchmark sets; see
        :doc:`/benchmarks`).
    n_out
        Dimension ``d`` of the predicted geometry.
    dim, n_heads, n_inducing
        Token width, attention heads, ISAB inducing points.
    n_context_blocks, n_generator_blocks, n_refiner_blocks
        ISAB blocks of each part (``n_refiner_blocks`` with ``structure='refiner'`` only).
    structure
        What follows the generator. ``None`` (default): nothing, the generator's proposal is the
        geometry. ``'refiner'``: a residual EDM refiner, trained after the generator's warm-up
        (``refine_start`` of :meth:`train`) and run for ``refine_steps`` at inference; it did
        not improve the placement of query cells in our benchmarks (anchored layouts within 0.002
        per seed on Spearman, Stress-1 and edge ROC-AUC; layouts without an anchor level or better
        without it, in the means of 3 seeds) and took about 40% of the training time, so it is off by default
        (:doc:`/how_it_works`). ``'ipa'``: the Topo-IPA-R
        structure module refines the generator's first two principal coordinates by a
        weight-shared attention block recycled ``n_recycles`` times over a candidate graph
        (cosine kNN of the embeddings, ``k_candidates`` per spot) biased by a learned topology
        gate; the gate is pretrained during the generator warm-up, then trained jointly with a
        trust region to its snapshot (see :class:`gearsx.module.StructureModule`). Attention
        weights are available from :meth:`get_attention` and :func:`gearsx.pl.attention`.
        In the benchmarks (:doc:`/benchmarks`) ``'ipa'`` measured within about one standard
        deviation over seeds of the refiner, at several times the training cost.
    n_recycles, k_candidates
        Structure-module settings (``structure='ipa'``).

    Attributes
    ----------
    {model_attributes}

    Examples
    --------
    >>> import gearsx as gx
    >>> st, sc = gx.datasets.simulate_tissue(n_cells_per_slide=3000, random_state=0)
    >>> st, sc = gx.pp.prepare(st, sc, slide_key="slide", n_top_genes=100)
    >>> st.obsm["X_gears"] = gx.pp.mean_center_per_slide(st, slide_key="slide", copy=True).layers["gears_centered"]
    >>> geo = gx.model.GEARS(st, slide_key="slide", n_out=8, dim=32)
    >>> geo.train(max_epochs=1, n_batches=2, n_min=64, n_max=96, progress=False)
    >>> xy = geo.predict_geometry(indices=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    >>> xy.shape
    (10, 2)
    """

    @renamed_arguments(embedding_key="use_rep")
    def __init__(
        self,
        adata: AnnData,
        *,
        use_rep: str | None = None,
        slide_key: str | None = None,
        spatial_key: str | None = None,
        targets: Literal["gram", "rw_stress"] = "gram",
        n_out: int = 32,
        dim: int = 64,
        n_heads: int = 4,
        n_inducing: int = 32,
        n_context_blocks: int = 2,
        n_generator_blocks: int = 2,
        n_refiner_blocks: int = 2,
        structure: Literal["refiner", "ipa"] | None = None,
        n_recycles: int = 5,
        k_candidates: int = 100,
        _n_input: int | None = None,
    ) -> None:
        from gearsx.module import GearsModule
        from gearsx.module._gears import STRUCTURES

        if structure not in STRUCTURES:
            msg = f"`structure` must be None, 'refiner' or 'ipa'; got {structure!r}."
            raise ValueError(msg)
        if targets not in _TARGETS:
            msg = f"`targets` must be one of {_TARGETS}; got {targets!r}."
            raise ValueError(msg)
        module_kwargs: dict[str, Any] = {
            "targets": targets,
            "n_out": check_positive_int(n_out, name="n_out", minimum=2),
            "dim": check_positive_int(dim, name="dim"),
            "n_heads": check_positive_int(n_heads, name="n_heads"),
            "n_inducing": check_positive_int(n_inducing, name="n_inducing"),
            "n_context_blocks": check_positive_int(n_context_blocks, name="n_context_blocks"),
            "n_generator_blocks": check_positive_int(n_generator_blocks, name="n_generator_blocks"),
            "n_refiner_blocks": check_positive_int(n_refiner_blocks, name="n_refiner_blocks"),
            "structure": structure,
            "n_recycles": check_positive_int(n_recycles, name="n_recycles"),
            "k_candidates": check_positive_int(k_candidates, name="k_candidates"),
        }
        if dim % n_heads:
            msg = f"`dim`={dim} must be divisible by `n_heads`={n_heads}."
            raise ValueError(msg)
        self._saved_reference: dict[str, Any] | None = None
        if adata is None:  # rebuilt from a saved state by `load` (no ST data at hand)
            if _n_input is None:
                msg = "`adata` is required: GEARS learns from ST spots with embeddings and coordinates."
                raise TypeError(msg)
            n_input = _n_input
            super().__init__(None)
        else:
            keys = {"use_rep": use_rep, "slide_key": slide_key, "spatial_key": spatial_key}
            with type(self)._restore_on_error(adata):
                self._ensure_registered(adata, keys)
                super().__init__(adata)
            n_input = self._embedding().shape[1]
        self._module_kwargs = module_kwargs
        kw = {k: v for k, v in module_kwargs.items() if k != "targets"}
        self.module = GearsModule(n_input, **kw)
        self.train_params_: dict[str, Any] = {}

    @classmethod
    def _ensure_registered(cls, adata: AnnData, keys: dict[str, str | None]) -> None:
        """Register ``adata`` when it is not registered itself, or when keys are given."""
        if cls._is_registered(adata) and all(v is None for v in keys.values()):
            return
        # No slide key given (whatever the other keys): setup_anndata takes the slide column that fit_encoder
        # recorded, so a multi-slide reference is never read as one slide; a given key that puts recorded slides
        # together warns.
        cls.setup_anndata(
            adata,
            use_rep=keys["use_rep"] or Key.embedding,
            slide_key=keys["slide_key"],
            spatial_key=keys["spatial_key"] or Key.spatial,
        )

    @classmethod
    def _upgrade_saved(cls, meta: dict, state: dict) -> None:
        """Bring saves of older gearsx to the current architecture.

        A model saved before ``structure`` was recorded had the refiner (the default then). Versions
        before the generator-only default built the refiner's layers for every model, ``'ipa'``
        included, where they stayed untrained and unused; a model without a refiner drops them.
        """
        from gearsx.module._gears import REFINER_LAYERS

        super()._upgrade_saved(meta, state)
        params = meta["init_params"]
        params.setdefault("structure", "refiner")
        if params["structure"] != "refiner":
            prefixes = tuple(f"module.{name}." for name in REFINER_LAYERS)
            for key in [k for k in state if k.startswith(prefixes)]:
                del state[key]

    @classmethod
    def _without_anndata(cls, meta: dict, state: dict) -> GEARS:
        weight = state.get("module.inp.0.weight")
        if weight is None:
            msg = "The saved GEARS weights lack the input layer (`module.inp.0.weight`); save the model again."
            raise ValueError(msg)
        model = cls(None, _n_input=int(weight.shape[1]), **meta["init_params"])
        model._setup_args = dict(meta["setup_args"])
        model._saved_meta = {"var_names": list(meta["var_names"]), "slides": list(meta.get("slides", []))}
        return model

    # --- registry -------------------------------------------------------------------------------
    @classmethod
    @renamed_arguments(embedding_key="use_rep")
    def setup_anndata(
        cls,
        adata: AnnData,
        *,
        use_rep: str = Key.embedding,
        slide_key: str | None = None,
        spatial_key: str = Key.spatial,
    ) -> None:
        """Register ``adata`` (embeddings, slide labels, coordinates) for :class:`GEARS`.

        Parameters
        ----------
        adata
            ST data.
        use_rep
            ``obsm`` key of the spot embeddings (written by :func:`gearsx.tl.fit_encoder`).
        slide_key
            ``obs`` column with the slide; ``None``: the column recorded by an earlier step
            (:func:`gearsx.tl.fit_encoder`, :func:`gearsx.pp.prepare`), else a single slide.
            Minisets never mix slides.
        spatial_key
            ``obsm`` key of the spot coordinates (training targets only; never an input).
        """
        check_obsm_key(adata, use_rep, "use_rep", "compute the embeddings first with `gx.tl.fit_encoder(adata, ...)`")
        # no slide key: the recorded slide column, so a multi-slide reference is never read as one slide
        slide_key = resolve_slide_key(adata, slide_key)
        check_obsm_key(adata, spatial_key, "spatial_key", "GEARS learns geometry from the spot coordinates")
        if use_rep == spatial_key:
            msg = (
                f"`use_rep`={use_rep!r} is `spatial_key`: the model would read the coordinates it learns to predict, "
                "and a query has none. Pass the expression embedding (`obsm['X_gears']` from gx.tl.fit_encoder)."
            )
            raise ValueError(msg)
        emb = np.asarray(adata.obsm[use_rep])
        if emb.ndim != 2 or not np.isfinite(emb).all():
            msg = f"`adata.obsm[{use_rep!r}]` must be a finite 2-D array; got shape {emb.shape} with NaN/inf."
            raise ValueError(msg)
        xy = np.asarray(adata.obsm[spatial_key])
        if xy.ndim != 2 or xy.shape[1] != 2 or not np.isfinite(xy).all():
            msg = f"`adata.obsm[{spatial_key!r}]` must be finite 2-D coordinates (n_obs, 2); got shape {xy.shape}."
            raise ValueError(msg)
        slides = adata.obs[slide_key].astype(str).to_numpy() if slide_key is not None else None
        check_distinct_positions(xy, slides, spatial_key=spatial_key, slide_key=slide_key, minimum=3)
        cls._register(adata, {"use_rep": use_rep, "slide_key": slide_key, "spatial_key": spatial_key})

    # --- training -------------------------------------------------------------------------------
    @renamed_arguments(enable_progress_bar="progress")
    @checks_flags
    def train(
        self,
        max_epochs: int | None = None,
        *,
        batch_size: int = 4,
        n_batches: int = 32,
        lr: float = 5e-4,
        weight_decay: float = 1e-4,
        n_min: int | None = None,
        n_max: int = 384,
        overlap: float = 0.5,
        refine_start: float = 0.3,
        validation: Literal["auto", "slide", "region"] | None = "auto",
        validation_slide: str | None = None,
        loss_weights: dict[str, float] | None = None,
        accelerator: str = "auto",
        devices: int | str = "auto",
        random_state: int = 0,
        progress: bool | None = None,
    ) -> None:
        """Train on minisets of the ST slides (see :ref:`gears-minisets` and :ref:`gears-geometry-model`).

        An epoch is ``n_batches`` batches of ``batch_size`` pairs of overlapping
        minisets, freshly drawn (seeded by ``random_state`` and the epoch). With a refiner
        (``structure='refiner'``), the generator trains alone for the first ``refine_start``
        fraction of the steps, then the refiner joins with a curriculum that raises the noise
        cap from 0.5 to 3 ``s_d`` in four stages (the structure module of ``structure='ipa'``
        joins at the same point). After each epoch, held-out minisets are predicted and
        ``val_L_geo``, ``val_recall15`` and ``val_spearman`` (and the generator-only
        ``val_base_*``) are recorded in ``history_``.

        Parameters
        ----------
        max_epochs
            Epochs; ``None`` aims at about 160 optimisation steps (see Notes).
        batch_size
            Miniset pairs per batch.
        n_batches
            Batches per epoch.
        lr, weight_decay
            AdamW settings (linear warm-up over 5% of the steps, then cosine decay to 0.1 ``lr``).
        n_min, n_max
            Miniset sizes (uniform on ``[n_min, n_max]``; ``n_max`` is clipped to each slide's
            training spots). ``n_min=None`` (default): 128, or the training spots of the smallest
            slide when it has fewer (at least 8), so that a small reference (a few dozen Visium spots
            of a region, an ST array) trains at the defaults; the value used is in
            ``train_params_['n_min']``. A number larger than a slide's training spots is an error.
        overlap
            Fraction of a miniset shared with its partner (at least 32 spots).
        refine_start
            Fraction of the steps before the refiner (or the structure module) starts training;
            unused by the default generator-only model.
        validation
            ``'region'``: hold out a 20% band of each slide (along its first principal
            axis); ``'slide'``: hold out a whole slide (``validation_slide``, default the last);
            ``'auto'`` (default): ``'region'`` (``'slide'`` when ``validation_slide`` is given), so every slide contributes 80% of its spots to
            training (holding out a whole slide would lose a third of a three-slide reference); a
            slide whose band would hold fewer than 8 spots (fewer than about 40 spots in all)
            trains on all its spots, and with no larger slide there is no validation (the split
            used is in ``train_params_['validation']``; ``'region'`` makes either an error);
            ``None``: no validation, every spot trains. Held-out spots are never used for
            training: for a final model on all the data, train once with ``validation=None``.
            The band lies at one end of each slide; in a layered tissue it can be one end
            layer, which the model then sees little of. On the simulator, where it is,
            minisets of held-out cells were placed worse than with a split that trains every
            region (scattered tiles, or no validation); on the placement of query cells such a
            split was better on some benchmark sets and worse on others (see the
            structure-module benchmark in :doc:`/benchmarks`).
        validation_slide
            Name of the held-out slide for ``validation='slide'``.
        loss_weights
            Overrides of the loss weights of :meth:`gearsx.module.GearsModule.loss`, by term: the
            generator's ``'gen_gram'`` (1) and ``'gen_scale'`` (0.1); with ``structure='refiner'``
            ``'denoise'`` (1), ``'ref_gram'`` (1), ``'ref_scale'`` (0.1), ``'nca'`` (0.1), ``'edge'``
            (0.1) and ``'overlap'`` (0.5); with ``structure='ipa'`` ``'structure'`` (1),
            ``'gate_joint'`` (0.05) and ``'gate_trust'`` (0.001). Weights are non-negative; a term
            this model does not train is refused.
        accelerator, devices
            ``'auto'`` uses CUDA when available.
        random_state
            Seed of initialisation, miniset draws and noise.
        progress
            One progress bar, updated per epoch (default: ``gx.settings.progress_bar``).

        Notes
        -----
        The defaults (``dim=64``, about 160 steps) were chosen for CPU speed on the pseudo-spot
        benchmarks: ``dim=64`` and 320 steps placed held-out cells as well as ``dim=128`` and 600
        steps, and halving to 160 steps left the placement of query cells unchanged within seed
        noise on the same-tissue and disjoint-region protocols while halving the training time
        (the figures are on the :doc:`/benchmarks` page). For the best geometry on spots, pass
        ``max_epochs`` for ~600 steps (``max_epochs=19`` at ``n_batches=32``) and ``dim=128`` to
        :class:`GEARS`.

        The validation figures in ``history_`` score minisets of the held-out spots, not the placement
        of query cells, and are no criterion for when to stop: on the simulator they peaked in the
        first three epochs while the query's layout kept improving, and on MERFISH (up to 10 epochs)
        and Xenium they rose while it stayed level (see the training-length benchmark in :doc:`/benchmarks`).
        """
        # Over 80 lines on purpose: argument checks, then split -> loaders -> plan -> runner -> record, one call each.
        random_state = check_positive_int(random_state, name="random_state", minimum=0)
        from gearsx.module._gears import check_loss_weights
        from gearsx.train import GearsTrainingPlan, miniset_loaders, validation_split

        if self.adata is None:
            msg = "This GEARS model was loaded without its ST data; load it with `adata=` to train it further."
            raise ValueError(msg)
        batch_size = check_positive_int(batch_size, name="batch_size")
        n_batches = check_positive_int(n_batches, name="n_batches")
        check_positive_number(lr, name="lr")
        check_nonnegative_number(weight_decay, name="weight_decay")
        loss_weights = check_loss_weights(loss_weights, self._module_kwargs.get("structure"))
        if not 0.0 <= refine_start < 1.0:
            msg = f"`refine_start` must be in [0, 1); got {refine_start}."
            raise ValueError(msg)
        if max_epochs is None:
            max_epochs = max(1, round(_DEFAULT_STEPS / n_batches))
        max_epochs = check_positive_int(max_epochs, name="max_epochs")
        emb = self._embedding()
        coords = self._coords()
        slides = self._slide_codes()
        val_mask, split = validation_split(
            validation, validation_slide, slides, coords, self._slide_names(), slide_key=self.setup_args["slide_key"]
        )
        train_idx = np.flatnonzero(~val_mask)
        if n_min is None:  # 128, or the smallest slide's training spots (the loaders name a slide below 8)
            counts = np.bincount(slides[train_idx])
            smallest = int(counts[counts > 0].min()) if len(train_idx) else 0
            n_min = max(MIN_MINISET, min(DEFAULT_N_MIN, check_positive_int(n_max, name="n_max"), smallest))
        kind = self._module_kwargs["targets"]
        loader, val_loader = miniset_loaders(
            emb,
            coords,
            slides,
            val_mask,
            slide_names=self._slide_names(),
            batch_size=batch_size,
            n_batches=n_batches,
            kind=kind,
            n_out=self._module_kwargs["n_out"],
            n_min=n_min,
            n_max=n_max,
            overlap=overlap,
            seed=random_state,
        )
        total_steps = max_epochs * n_batches
        logger.info(
            "GEARS: training on %d spots of %d slide(s), validation %s (%d spots); %d epochs x %d batches",
            len(train_idx),
            len(np.unique(slides[train_idx])),
            split,
            int(val_mask.sum()),
            max_epochs,
            n_batches,
        )
        refine_steps, sigma_start = 4, 1.0
        plan = GearsTrainingPlan(
            self.module,
            kind=kind,
            lr=lr,
            weight_decay=weight_decay,
            total_steps=total_steps,
            refine_start=refine_start,
            loss_weights=loss_weights,
            refine_steps=refine_steps,
            sigma_start=sigma_start,
        )
        self._fit_lightning(
            plan,
            loader,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            progress=progress,
            random_state=random_state,
            val_loader=val_loader,
        )
        last = self.history_.iloc[-1] if self.history_ is not None and len(self.history_) else {}
        logger.info(
            "GEARS: trained; last epoch loss %.4f, validation Spearman %.3f",
            float(last.get("train_total", np.nan)),
            float(last.get("val_spearman", np.nan)),
        )
        self.train_params_ = {
            "max_epochs": max_epochs,
            "batch_size": batch_size,
            "n_batches": n_batches,
            "lr": lr,
            "n_min": n_min,
            "n_max": n_max,
            "overlap": overlap,
            "refine_start": refine_start,
            "loss_weights": loss_weights,  # the overrides only ({}: the defaults of LOSS_WEIGHTS)
            "validation": split,
            "n_train_spots": len(train_idx),
            "n_validation_spots": int(val_mask.sum()),
            "random_state": random_state,
        }
        # the encoder whose space the spot embeddings live in: reconstruct refuses cells adapted to another
        encoder_id = recorded_encoder_id(self.adata, Key.encoder, self.setup_args["use_rep"])
        if encoder_id is not None:
            self.train_params_["encoder_id"] = encoder_id

    def reference(self) -> dict[str, Any] | None:
        """Return the spots the model was trained on, as reference-anchored reconstruction needs them.

        Returns
        -------
        ``{'embedding': (m, n_input), 'coords': (m, 2), 'slides': (m,) codes, 'slide_names': list,
        'expression': (m, n_genes) or None, 'genes': list, 'spatial_key': str, 'slide_key': str or None}``
        (``spatial_key``: the ``obsm`` key the coordinates came from; ``slide_key``: the ``obs`` column of
        the slides, ``None`` for one slide) from the registered ST data, or from
        the saved state of a model loaded without it; ``None`` for a model saved before references
        were stored. ``expression`` is the spots' ``layers['gears_centered']`` (mean-centred log
        expression, :func:`gearsx.pp.mean_center_per_slide`) in the order of ``genes``, ``None``
        when the ST data had no such layer (or the model was saved before it was kept).
        """
        if self.adata is not None:
            layer = self.adata.layers.get(Key.centered_layer)
            expression = None
            if layer is not None:
                expression = layer.toarray() if hasattr(layer, "toarray") else np.asarray(layer)
                expression = expression.astype(np.float32, copy=False)
            return {
                "embedding": self._embedding(),
                "coords": self._coords(),
                "slides": self._slide_codes(),
                "slide_names": self._slide_names(),
                "expression": expression,
                "genes": self.var_names,
                "spatial_key": self.setup_args.get("spatial_key") or Key.spatial,
                "slide_key": self.setup_args.get("slide_key"),
            }
        return self._saved_reference

    # --- persistence ----------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"slides": self._slide_names(), "train_params": self.train_params_}
        ref = self.reference()
        # small (spots x n_input, spots x genes): kept so a loaded model can anchor without the ST data
        if ref is not None:
            import torch

            extra["tensors"] = {
                "reference.embedding": torch.as_tensor(ref["embedding"], dtype=torch.float32),
                "reference.coords": torch.as_tensor(ref["coords"], dtype=torch.float64),
                "reference.slides": torch.as_tensor(ref["slides"], dtype=torch.int64),
            }
            if ref.get("expression") is not None:
                extra["tensors"]["reference.expression"] = torch.as_tensor(ref["expression"], dtype=torch.float32)
        return extra

    def _load_extra_state(self, meta: dict, state: dict) -> None:
        self.train_params_ = meta.get("train_params", {})
        if "reference.embedding" in state:
            self._saved_reference = {
                "embedding": state["reference.embedding"].numpy().astype(np.float32),
                "coords": state["reference.coords"].numpy().astype(np.float64),
                "slides": state["reference.slides"].numpy().astype(np.int64),
                "slide_names": list(meta.get("slides", [])),
                "expression": (
                    state["reference.expression"].numpy().astype(np.float32)
                    if "reference.expression" in state
                    else None
                ),
                "genes": list(meta.get("var_names", [])),
                "spatial_key": meta["setup_args"].get("spatial_key") or Key.spatial,
                "slide_key": meta["setup_args"].get("slide_key"),
            }
