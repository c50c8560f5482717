"""The SC adapter: an affine map of single-cell embeddings onto a trained encoder's ST embeddings (see :ref:`gears-adapter`)."""

from __future__ import annotations

import json
import logging
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from gearsx._utils import check_nonnegative_number, check_positive_int, check_positive_number, checks_flags, doc_params

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

    from ._encoder import SharedEncoder

__all__ = ["SCAdapter"]

logger = logging.getLogger(__name__)

#: Fewest single cells :meth:`SCAdapter.fit` accepts (the report's 5-fold classifier needs 5 per side).
MIN_ADAPTER_CELLS = 10
#: Default cap on the fine-tuning steps of :meth:`SCAdapter.fit` and :func:`gearsx.tl.fit_adapter`.
MAX_STEPS = 100
_META_FILE, _STATE_FILE = "adapter.json", "adapter.pt"


def _sqrtm(c: np.ndarray, *, inverse: bool = False) -> np.ndarray:
    """Symmetric (inverse) square root of a covariance, eigenvalues floored at 1e-6 of the largest."""
    vals, vecs = np.linalg.eigh(c)
    vals = np.clip(vals, max(vals.max(), 1e-12) * 1e-6, None)
    power = -0.5 if inverse else 0.5
    return (vecs * vals**power) @ vecs.T


def closed_form_map(z_sc: np.ndarray, z_st: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whitening-colouring map ``W0 = C_ST^{1/2} C_SC^{-1/2}``, ``b0 = mu_ST - W0 mu_SC`` (Ledoit-Wolf covariances)."""
    from sklearn.covariance import LedoitWolf

    w0 = _sqrtm(LedoitWolf().fit(z_st).covariance_) @ _sqrtm(LedoitWolf().fit(z_sc).covariance_, inverse=True)
    return w0, z_st.mean(0) - w0 @ z_sc.mean(0)


def support_projector(z_st: np.ndarray, tol: float) -> np.ndarray:
    """Orthogonal projector onto the directions in which ``z_st`` varies more than ``tol`` x the largest variance.

    Adapted SC embeddings are kept there: directions in which the ST embeddings are (nearly)
    constant carry no information, and a small SC offset along one, which no alignment loss
    notices, would still separate SC from ST.
    """
    vals, vecs = np.linalg.eigh(np.cov(z_st, rowvar=False))
    support = vecs[:, vals > tol * vals.max()]
    return support @ support.T


def alignment_report(z_sc: np.ndarray, z_st: np.ndarray, random_state: int) -> dict[str, float]:
    """How far SC embeddings sit from ST ones: domain classifier, CORAL, MMD, centroid, norms, kNN mixing."""
    from gearsx.metrics import coral_distance, domain_classifier_accuracy, knn_mixing, mmd_rbf

    rng = np.random.default_rng(random_state)
    m = min(len(z_sc), len(z_st), 5000)
    a = z_sc[rng.choice(len(z_sc), m, replace=False)]
    b = z_st[rng.choice(len(z_st), m, replace=False)]
    rms_st = float(np.sqrt(((z_st - z_st.mean(0)) ** 2).sum(1).mean()))
    return {
        "domain_accuracy": domain_classifier_accuracy(a, b, random_state=random_state),
        "coral": coral_distance(z_sc, z_st),
        # 1,000 rows a side, not 2,000: the two reports' MMDs took 1.7 s of a 9 s fit at 10,000 cells
        "mmd": mmd_rbf(z_sc, z_st, max_points=1000, random_state=random_state),
        "centroid_distance": float(np.linalg.norm(z_sc.mean(0) - z_st.mean(0)) / max(rms_st, 1e-12)),
        "norm_ratio": float(np.linalg.norm(z_sc, axis=1).mean() / max(np.linalg.norm(z_st, axis=1).mean(), 1e-12)),
        # 30 neighbours, fewer for a query too small to have them (knn_mixing pools m cells a side)
        **knn_mixing(z_sc, z_st, k=min(30, 2 * min(len(z_sc), len(z_st)) - 1), random_state=random_state),
    }


def _fine_tune(plan, z_sc: np.ndarray, n_epochs: int, batch_size: int, random_state: int, progress):
    """Run ``plan`` over shuffled SC batches for ``n_epochs`` on the CPU (the map is ``d^2 + d`` numbers)."""
    import torch

    from gearsx.train import fit_lightning

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.as_tensor(z_sc)),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(random_state),
    )
    history, _ = fit_lightning(
        plan,
        loader,
        max_epochs=n_epochs,
        accelerator="cpu",
        devices=1,
        progress=progress,
        random_state=random_state,
        reinitialise=False,
    )
    return history


#: Parameter text shared by :meth:`SCAdapter.fit` and :func:`gearsx.tl.fit_adapter` (no indentation).
FIT_PARAMS = """\
max_epochs, batch_size, lr
    Fine-tuning schedule (Adam); ``max_epochs=0`` keeps the closed-form map.
max_steps
    At most this many optimisation steps in all (``None``: no limit): with many cells
    the number of epochs is lowered to ``ceil(max_steps / batches per epoch)``. The
    affine map has ``d^2 + d`` parameters, so a capped number of steps fits it as well
    as full epochs do (up to 1,536 cells, three batches, the default changes nothing).
w_coral, w_mmd, w_identity
    Loss weights (finite, >= 0).
support_tol
    Directions in which the ST embeddings vary less than this fraction of the largest
    variance are outside their support; adapted SC embeddings take the ST mean there
    (in ``[0, 1)``).
random_state
    Seed.
progress
    Progress bar over epochs (default: ``gx.settings.progress_bar``)."""


def fit_params_doc(indent: int) -> str:
    """:data:`FIT_PARAMS` for a docstring whose parameter names sit ``indent`` spaces in."""
    return textwrap.indent(FIT_PARAMS, " " * indent).lstrip()


class SCAdapter:
    """Affine adapter ``g(z) = W z + b`` from single-cell embeddings to the ST embeddings of an encoder.

    The encoder is frozen and the ST embeddings are untouched. :meth:`~gearsx.model.SCAdapter.fit` starts from the
    closed-form whitening-colouring map ``W0 = C_ST^{1/2} C_SC^{-1/2}``,
    ``b0 = mu_ST - W0 mu_SC`` (Ledoit-Wolf shrunk covariances, so ill-conditioned ones are
    safe) and fine-tunes it with CORAL + RBF-MMD (median-heuristic bandwidth) + an identity
    regulariser ``||W - W0||^2 + ||b - b0||^2``
    (:class:`gearsx.train.AdapterTrainingPlan`, on the CPU: the map has ``d^2 + d``
    parameters). Outputs are kept on the support of the ST embeddings: directions in which
    the ST embeddings are constant carry no information, and a small SC offset there would
    separate the data sets without any loss noticing. A fitted adapter is attached to its
    encoder (:attr:`gearsx.model.SharedEncoder.adapter`), which then saves it with its own
    weights and applies it in ``get_latent_representation(..., adapt=True)``.

    Most users call :func:`gearsx.tl.fit_adapter`, which fits one and writes the adapted
    embeddings and the report to the AnnData.

    Parameters
    ----------
    encoder
        A trained :class:`gearsx.model.SharedEncoder`.
    mode
        Only ``'linear'`` (affine) is available.

    Attributes
    ----------
    module
        The :class:`gearsx.module.LinearAdapter` (``None`` before :meth:`~gearsx.model.SCAdapter.fit`).
    params_
        The arguments of :meth:`~gearsx.model.SCAdapter.fit` (and the epochs run, the support's dimension).
    report_
        ``{'before': ..., 'after': ...}``: the alignment report (ST-vs-SC domain-classifier
        balanced accuracy, CORAL, MMD, centroid distance, norm ratio, kNN mixing entropy,
        iLISI) of the SC embeddings before and after adapting.
    history_
        Per-epoch training loss (:class:`pandas.DataFrame`).

    Examples
    --------
    >>> import gearsx as gx
    >>> st, sc = gx.datasets.simulate_tissue(n_cells_per_slide=1500, random_state=0)
    >>> st, sc = gx.pp.prepare(st, sc, slide_key="slide", n_top_genes=100)
    >>> gx.pp.mean_center_per_slide(st, slide_key="slide")
    >>> gx.pp.mean_center_per_slide(sc, slide_key=None)
    >>> encoder = gx.tl.fit_encoder(st, slide_key="slide", n_latent=16, max_epochs=2, progress=False)
    >>> adapter = gx.model.SCAdapter(encoder).fit(sc, max_epochs=2, progress=False)
    >>> adapter.transform(encoder.get_latent_representation(sc)).shape  # the 750 simulated single cells
    (750, 16)
    >>> encoder.adapter is adapter
    True
    """

    def __init__(self, encoder: SharedEncoder, *, mode: Literal["linear"] = "linear") -> None:
        from ._encoder import SharedEncoder

        if not isinstance(encoder, SharedEncoder):
            msg = (
                f"`encoder` must be the trained gx.model.SharedEncoder returned by gx.tl.fit_encoder; got "
                f"{type(encoder).__name__}. (The GEARS geometry model comes after the adapter, in gx.tl.reconstruct.)"
            )
            raise TypeError(msg)
        if mode != "linear":
            msg = f"`mode`={mode!r} is not available; only 'linear' (affine) adapters are implemented."
            raise NotImplementedError(msg)
        self.encoder, self.mode = encoder, mode
        self.module = None
        self.params_: dict[str, Any] = {}
        self.report_: dict[str, dict[str, float]] = {}
        self.history_: pd.DataFrame | None = None

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`~gearsx.model.SCAdapter.fit` has run (or the adapter was loaded fitted)."""
        return self.module is not None

    @property
    def n_latent(self) -> int:
        """Width of the embeddings the adapter maps (the encoder's ``n_latent``)."""
        return self.encoder.n_latent

    @doc_params(fit_params=fit_params_doc(8))
    @checks_flags
    def fit(
        self,
        adata_sc: AnnData,
        adata_st: AnnData | None = None,
        *,
        max_epochs: int = 30,
        max_steps: int | None = MAX_STEPS,
        batch_size: int = 512,
        lr: float = 1e-3,
        w_coral: float = 1.0,
        w_mmd: float = 1.0,
        w_identity: float = 0.1,
        support_tol: float = 1e-3,
        random_state: int = 0,
        progress: bool | None = None,
    ) -> SCAdapter:
        """Fit the map on the encoder's embeddings of ``adata_sc`` and ``adata_st``, and attach it to the encoder.

        Parameters
        ----------
        adata_sc
            SC data with the encoder's genes and expression layer.
        adata_st
            ST data to align to (default: the encoder's training data).
        {fit_params}

        Returns
        -------
        SCAdapter
            The fitted adapter (``self``), attached to its encoder.
        """
        random_state = check_positive_int(random_state, name="random_state", minimum=0)
        import torch

        from gearsx.module import LinearAdapter
        from gearsx.train import AdapterTrainingPlan

        if adata_sc.n_obs < MIN_ADAPTER_CELLS:
            msg = (
                f"`adata_sc` has {adata_sc.n_obs} cells; fitting the adapter (covariances, and its held-out "
                f"alignment report) needs at least {MIN_ADAPTER_CELLS}."
            )
            raise ValueError(msg)
        if adata_st is adata_sc:
            msg = (
                "`adata_st` is `adata_sc` itself: the adapter maps the cells onto the ST embeddings, so it needs the "
                "spots (leave `adata_st=None` for the encoder's own training data)."
            )
            raise ValueError(msg)
        weights = {"w_coral": w_coral, "w_mmd": w_mmd, "w_identity": w_identity}
        for name, value in weights.items():
            check_nonnegative_number(value, name=name)
        if max_epochs != 0 and not any(weights.values()):
            msg = (
                "`w_coral`, `w_mmd` and `w_identity` are all 0: fine-tuning would minimise nothing and leave the "
                "closed-form map as it is. Pass max_epochs=0 to keep that map, or give a weight."
            )
            raise ValueError(msg)
        check_positive_number(lr, name="lr")
        if not 0.0 <= support_tol < 1.0:  # NaN fails too
            msg = (
                f"`support_tol` must be in [0, 1); got {support_tol!r}: directions of the ST embeddings whose "
                "variance is at most `support_tol` x the largest are dropped, so 1 would drop every direction."
            )
            raise ValueError(msg)
        max_epochs = check_positive_int(max_epochs, name="max_epochs", minimum=0)
        batch_size = check_positive_int(batch_size, name="batch_size", minimum=8)
        if max_steps is not None:
            max_steps = check_positive_int(max_steps, name="max_steps")
        if not self.encoder.is_trained:
            msg = "The encoder is not trained yet; train it (gx.tl.fit_encoder) before fitting the adapter."
            raise RuntimeError(msg)
        z_st = self.encoder.get_latent_representation(adata_st)
        z_sc = self.encoder.get_latent_representation(adata_sc)
        w0, b0 = closed_form_map(z_sc, z_st)
        adapter = LinearAdapter(z_st.shape[1])
        with torch.no_grad():
            adapter.weight.copy_(torch.as_tensor(w0, dtype=torch.float32))
            adapter.bias.copy_(torch.as_tensor(b0, dtype=torch.float32))
        projector = support_projector(z_st, support_tol)
        proj = torch.as_tensor(projector, dtype=torch.float32)
        center = torch.as_tensor(z_st.mean(0), dtype=torch.float32)
        n_epochs = max_epochs
        if max_steps is not None:
            n_epochs = min(max_epochs, math.ceil(max_steps / math.ceil(len(z_sc) / batch_size)))
        self.history_ = None  # a refit never keeps the loss curve of an earlier fit
        if n_epochs > 0:
            plan = AdapterTrainingPlan(
                adapter, torch.as_tensor(z_st), support=proj, center=center, lr=lr, **weights
            )  # fmt: skip
            self.history_ = _fine_tune(plan, z_sc, n_epochs, batch_size, random_state, progress)
        adapter = adapter.cpu()
        with torch.no_grad():
            # Fold the support projection into the affine map, so the adapter stays one W z + b.
            adapter.weight.copy_(proj @ adapter.weight)
            adapter.bias.copy_((adapter.bias - center) @ proj + center)
        self.module = adapter
        self.params_ = {
            "mode": self.mode,
            "max_epochs": max_epochs,
            "epochs_run": n_epochs,
            **({"max_steps": max_steps} if max_steps is not None else {}),  # None left out (see write_record)
            "batch_size": batch_size,
            "lr": lr,
            **weights,
            "support_tol": support_tol,
            "support_dim": int(round(np.trace(projector))),
            "random_state": random_state,
        }
        self.report_ = {
            "before": alignment_report(z_sc, z_st, random_state),
            "after": alignment_report(self.transform(z_sc), z_st, random_state),
        }
        self.encoder.adapter = self
        logger.info(
            "adapter: domain accuracy %.3f -> %.3f",
            self.report_["before"]["domain_accuracy"],
            self.report_["after"]["domain_accuracy"],
        )
        return self

    def transform(self, z: np.ndarray) -> np.ndarray:
        """Map encoder embeddings ``z`` (``(n, n_latent)``) with the fitted adapter.

        Parameters
        ----------
        z
            Embeddings from :meth:`gearsx.model.SharedEncoder.get_latent_representation`.

        Returns
        -------
        ``(n, n_latent)`` float32 array.
        """
        import torch

        if not self.is_fitted:
            msg = "This SCAdapter is not fitted yet; call `.fit(adata_sc)` first."
            raise RuntimeError(msg)
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.n_latent:
            msg = f"`z` must be (n_obs, {self.n_latent}) encoder embeddings; got shape {z.shape}."
            raise ValueError(msg)
        with torch.inference_mode():
            return self.module.cpu()(torch.as_tensor(z)).numpy()

    # --- persistence ------------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict[str, Any]]:
        """Return the fitted weights (``{'weight', 'bias'}`` tensors) and the JSON metadata (mode, params, report)."""
        if not self.is_fitted:
            msg = "This SCAdapter is not fitted yet; there is nothing to save."
            raise RuntimeError(msg)
        tensors = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        return tensors, {"mode": self.mode, "params": self.params_, **self.report_}

    @classmethod
    def from_state(cls, encoder: SharedEncoder, tensors: dict, meta: dict) -> SCAdapter:
        """Rebuild a fitted adapter for ``encoder`` from :meth:`~gearsx.model.SCAdapter.state` (checks the width)."""
        from gearsx.module import LinearAdapter

        weight = tensors.get("weight")
        if weight is None or tuple(weight.shape) != (encoder.n_latent, encoder.n_latent):
            got = None if weight is None else tuple(weight.shape)
            msg = f"The saved adapter maps {got} embeddings; this encoder's are {encoder.n_latent}-dimensional."
            raise ValueError(msg)
        adapter = cls(encoder, mode=meta.get("mode", "linear"))
        adapter.module = LinearAdapter(encoder.n_latent)
        adapter.module.load_state_dict(tensors)
        adapter.params_ = dict(meta.get("params", {}))
        adapter.report_ = {k: meta[k] for k in ("before", "after") if k in meta}
        return adapter

    @checks_flags
    def save(self, dir_path: str | Path, *, overwrite: bool = False) -> None:
        """Write ``adapter.pt`` (tensors only) and ``adapter.json`` into ``dir_path``.

        An encoder saves its attached adapter with its own weights; this saves the adapter alone.

        Parameters
        ----------
        dir_path
            Folder to write (created).
        overwrite
            Replace the adapter files of an earlier save.
        """
        import torch

        path = Path(dir_path)
        if (path / _META_FILE).exists() and not overwrite:
            msg = f"{path / _META_FILE} exists; pass overwrite=True to replace it."
            raise FileExistsError(msg)
        tensors, meta = self.state()
        path.mkdir(parents=True, exist_ok=True)
        torch.save(tensors, path / _STATE_FILE)
        (path / _META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, dir_path: str | Path, encoder: SharedEncoder) -> SCAdapter:
        """Load an adapter written by :meth:`~gearsx.model.SCAdapter.save` and attach it to ``encoder``.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`~gearsx.model.SCAdapter.save`.
        encoder
            The encoder it was fitted on (same embedding width).

        Returns
        -------
        SCAdapter
            The fitted adapter, attached to ``encoder``.
        """
        import torch

        path = Path(dir_path)
        if not (path / _META_FILE).exists() or not (path / _STATE_FILE).exists():
            msg = f"{path} holds no {_META_FILE} and {_STATE_FILE}; is it a folder written by `SCAdapter.save()`?"
            raise FileNotFoundError(msg)
        meta = json.loads((path / _META_FILE).read_text())
        adapter = cls.from_state(encoder, torch.load(path / _STATE_FILE, map_location="cpu", weights_only=True), meta)
        encoder.adapter = adapter
        return adapter

    def __repr__(self) -> str:
        if not self.is_fitted:
            return f"SCAdapter(mode={self.mode!r}) for a {self.n_latent}-d encoder; not fitted"
        after = self.report_.get("after", {}).get("domain_accuracy", float("nan"))
        return f"SCAdapter(mode={self.mode!r}) for a {self.n_latent}-d encoder; fitted, domain accuracy {after:.3f}"
