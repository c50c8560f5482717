"""Clustering algorithms on feature arrays, used by :func:`gearsx.tl.cluster_domains` (see :ref:`gears-domains`)."""

from __future__ import annotations

import logging
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from gearsx._utils import as_rng, check_nonnegative_number, check_positive_int, check_positive_number, n_distinct_rows
from gearsx.geometry._knn import group_knn, knn

__all__ = ["kmeans", "leiden", "mclust_eee", "mclust_r", "scan", "spatial_majority_vote"]

logger = logging.getLogger(__name__)

#: ``n_clusters=None`` for mclust: candidates scored by BIC (mclust's default is ``G = 1:9``).
MCLUST_DEFAULT_RANGE = tuple(range(2, 10))
#: Ward agglomeration (mclust-like initialisation) runs on at most this many points.
HC_MAX_POINTS = 5000


def _seed(random_state) -> int:
    return int(as_rng(random_state).integers(2**31 - 1))


def _whiten(x: np.ndarray) -> np.ndarray:
    """Centre and rotate/scale to unit variance along every principal axis (mclust's ``hcUse='SVD'``)."""
    c = x - x.mean(0)
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    keep = s > s[0] * 1e-8
    return c @ vt[keep].T / (s[keep] / np.sqrt(max(len(x) - 1, 1)))


def _start_partition(x, w, n_clusters, how, rng) -> tuple[np.ndarray, np.ndarray]:
    """Return a starting partition ``(indices, labels)``: Ward on the whitened data or one k-means run."""
    if how == "hc":
        from scipy.cluster.hierarchy import fcluster, linkage

        sub = (
            np.arange(len(w)) if len(w) <= HC_MAX_POINTS else np.sort(rng.choice(len(w), HC_MAX_POINTS, replace=False))
        )
        return sub, fcluster(linkage(w[sub], method="ward"), t=n_clusters, criterion="maxclust") - 1
    from sklearn.cluster import KMeans

    return np.arange(len(x)), KMeans(n_clusters=n_clusters, n_init=1, random_state=_seed(rng)).fit(x).labels_


def _tied_from_partition(x: np.ndarray, labels: np.ndarray) -> dict:
    """EEE parameters of a hard partition: proportions, means and the pooled within-cluster precision."""
    ks = np.unique(labels)
    means = np.stack([x[labels == k].mean(0) for k in ks])
    weights = np.array([(labels == k).mean() for k in ks])
    resid = x - means[np.searchsorted(ks, labels)]
    cov = resid.T @ resid / len(x) + 1e-6 * np.eye(x.shape[1])
    return {"weights_init": weights, "means_init": means, "precisions_init": np.linalg.inv(cov)}


def _start(x, w, n_clusters, how, rng):
    idx, labels = _start_partition(x, w, n_clusters, how, rng)
    return x[idx], labels


def _tied_gmm(x, n_clusters, *, weights_init, means_init, precisions_init, max_iter=500, tol=1e-5):
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(
        n_components=n_clusters,
        covariance_type="tied",
        weights_init=weights_init,
        means_init=means_init,
        precisions_init=precisions_init,
        max_iter=max_iter,
        tol=tol,
        reg_covar=1e-6,
    )
    # EM's products are thin (n x d times d x d, d <= ~50): a second BLAS thread only adds synchronisation
    # (about 3x slower on two cores, same labels), so EM runs BLAS on one thread.
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("always")
        gmm.fit(x)
    if any("converge" in str(w.message) for w in caught):
        logger.warning("mclust (EEE): EM did not converge in %d iterations; raise `max_iter`.", max_iter)
    return gmm


def mclust_eee(
    x: np.ndarray,
    n_clusters: int | None,
    *,
    init: str = "hc",
    n_init: int = 10,
    random_state: int = 0,
    max_iter: int = 500,
    tol: float = 1e-5,
) -> tuple[np.ndarray, dict]:
    """Gaussian mixture with mclust's EEE model: one full covariance shared by all components.

    The EEE model is scikit-learn's ``covariance_type="tied"``; we use
    :class:`sklearn.mixture.GaussianMixture` for the EM. Like mclust, EM starts from a
    hierarchical agglomeration of the SVD-whitened data (mclust's default ``hcUse='SVD'``;
    here Ward's criterion, the EII special case of mclust's model-based ``hc``, on at most
    5,000 points), plus ``n_init`` starts from single k-means runs (different seeds); each
    start sets the proportions, means and pooled within-cluster covariance of its
    partition, and the EM fit with the highest likelihood wins. (Starting from means alone
    is not enough: scikit-learn then estimates the shared covariance from its own
    initialisation, and EM stays in the isotropic local optimum when clusters share an
    elongated covariance.) ``init='kmeans'`` uses only the k-means starts.
    ``n_clusters=None`` picks the number of components in 2-9 by BIC (mclust's
    default range, without the trivial one-component model).

    Returns
    -------
    Labels ``(n,)`` and a dict with ``bic``, ``log_likelihood``, ``n_clusters``, ``init`` (of the winner).
    """
    if init not in ("hc", "kmeans"):
        msg = f"`init` must be 'hc' or 'kmeans'; got {init!r}."
        raise ValueError(msg)
    n_init = check_positive_int(n_init, name="n_init", minimum=0)
    max_iter = check_positive_int(max_iter, name="max_iter")
    tol = check_nonnegative_number(tol, name="tol")
    rng = as_rng(random_state)
    candidates = MCLUST_DEFAULT_RANGE if n_clusters is None else (n_clusters,)
    distinct = n_distinct_rows(x)  # a component needs a point of its own
    candidates = [k for k in candidates if k <= distinct]
    if not candidates:
        msg = f"mclust needs at least {min(MCLUST_DEFAULT_RANGE) if n_clusters is None else n_clusters} distinct rows; got {distinct}."
        raise ValueError(msg)
    best, bics = None, {}
    w = _whiten(x)
    starts = (["hc"] if init == "hc" else []) + ["kmeans"] * (n_init if init == "hc" else max(n_init, 1))
    for k in candidates:
        fits = [
            (how, _tied_gmm(x, k, **_tied_from_partition(*_start(x, w, k, how, rng)), max_iter=max_iter, tol=tol))
            for how in starts
        ]
        how, gmm = max(fits, key=lambda f: f[1].lower_bound_)
        bic = float(gmm.bic(x))
        bics[k] = bic
        if best is None or bic < best[2]:
            best = (how, gmm, bic)
    how, gmm, bic = best
    info = {
        "bic": bic,
        "log_likelihood": float(gmm.score(x) * len(x)),
        "n_clusters": int(gmm.n_components),
        "init": how,
        "converged": bool(gmm.converged_),
    }
    if n_clusters is None:
        info["bic_by_n_clusters"] = {str(k): v for k, v in bics.items()}
    return gmm.predict(x), info


def mclust_r(
    x: np.ndarray, n_clusters: int | None, *, model: str = "EEE", random_state: int = 0
) -> tuple[np.ndarray, dict]:
    """R's ``mclust::Mclust`` through rpy2 (only when asked; never a fallback)."""
    hint = (
        "`backend='r'` needs R with the mclust package and the rpy2 Python package: install R, run "
        "`install.packages('mclust')` in R, then `pip install 'gearsx[r]'`. Or use `backend='python'` "
        "(scikit-learn's tied-covariance mixture, the same EEE model)."
    )
    try:
        import rpy2.robjects as ro
        from rpy2.robjects import numpy2ri
        from rpy2.robjects.conversion import localconverter
    except Exception as err:  # ImportError, or rpy2 present but R missing (RuntimeError/OSError)
        msg = f"{hint} (import failed: {err!r})"
        raise ImportError(msg) from err
    try:
        ro.r("suppressPackageStartupMessages(library(mclust))")
    except Exception as err:
        msg = f"{hint} (R could not load mclust: {err!r})"
        raise ImportError(msg) from err
    ro.r["set.seed"](int(random_state))
    with localconverter(ro.default_converter + numpy2ri.converter):
        g = ro.IntVector(list(MCLUST_DEFAULT_RANGE)) if n_clusters is None else int(n_clusters)
        res = ro.r["Mclust"](np.ascontiguousarray(x, dtype=np.float64), G=g, modelNames=model, verbose=False)
        if res is ro.NULL or res is None:
            msg = f"R mclust returned NULL for model {model!r} (the fit failed, e.g. singular covariance); reduce `n_pcs`."
            raise RuntimeError(msg)
        labels = np.asarray(res.rx2("classification")).astype(int) - 1
        info = {"bic": -float(np.asarray(res.rx2("bic"))[0]), "n_clusters": int(np.asarray(res.rx2("G"))[0])}
    return labels, info


def kmeans(x: np.ndarray, n_clusters: int, *, n_init: int = 10, random_state: int = 0) -> tuple[np.ndarray, dict]:
    """:class:`sklearn.cluster.KMeans` (k-means++, ``n_init`` restarts)."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=_seed(random_state)).fit(x)
    return km.labels_, {"inertia": float(km.inertia_)}


def leiden(
    x: np.ndarray,
    n_clusters: int | None,
    *,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    random_state: int = 0,
    max_search: int = 25,
) -> tuple[np.ndarray, dict]:
    """Cluster with scanpy's kNN graph + Leiden (igraph); with ``n_clusters``, bisect the resolution to hit it.

    The graph is built on a private AnnData, so a user's ``obsp['connectivities']`` is never touched.
    ``resolution`` and ``n_neighbors`` are checked here: scanpy takes a resolution of 0, a negative
    one or NaN without a word.
    """
    import anndata as ad
    import scanpy as sc

    resolution = check_positive_number(resolution, name="resolution")
    n_neighbors = check_positive_int(n_neighbors, name="n_neighbors", minimum=2)

    tmp = ad.AnnData(obsm={"X_rep": x}, shape=(len(x), 0))
    seed = _seed(random_state)
    sc.pp.neighbors(tmp, use_rep="X_rep", n_neighbors=n_neighbors, random_state=seed)

    def run(res: float) -> np.ndarray:
        sc.tl.leiden(tmp, resolution=res, flavor="igraph", n_iterations=2, directed=False, random_state=seed)
        return tmp.obs["leiden"].cat.codes.to_numpy()

    if n_clusters is None:
        labels = run(resolution)
        return labels, {"resolution": resolution, "n_clusters": int(labels.max() + 1)}
    lo, hi, res = 0.0, 4.0, resolution
    best = None
    for _ in range(max_search):
        labels = run(res)
        k = int(labels.max() + 1)
        if best is None or abs(k - n_clusters) < abs(best[1] - n_clusters):
            best = (labels, k, res)
        if k == n_clusters:
            break
        lo, hi = (res, hi) if k < n_clusters else (lo, res)
        res = 0.5 * (lo + hi)
    labels, k, res = best
    if k != n_clusters:
        logger.warning(
            "leiden: no resolution in (0, 4] gave %d clusters; using resolution %.4g with %d.", n_clusters, res, k
        )
    return labels, {"resolution": float(res), "n_clusters": k}


def scan(
    x: np.ndarray,
    n_clusters: int,
    *,
    n_neighbors: int = 20,
    n_hidden: int = 128,
    n_heads: int = 5,
    entropy_weight: float = 5.0,
    max_epochs: int = 100,
    self_label_epochs: int = 30,
    threshold: float = 0.99,
    batch_size: int = 256,
    lr: float = 1e-3,
    noise: float = 0.1,
    accelerator: str = "auto",
    random_state: int = 0,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """SCAN on fixed features: kNN mining, neighbour-consistency training, self-labelling.

    Both training phases run through the one runner (:class:`gearsx.train.ScanTrainingPlan`).

    Features are standardised per dimension. Step 1 mines the ``n_neighbors`` nearest
    neighbours (exact, or pynndescent above 50,000 points). Step 2 trains a
    :class:`~gearsx.module.ScanHead` so each point and a random mined neighbour get the same
    cluster (:func:`~gearsx.module.scan_loss`); both are perturbed by Gaussian noise
    (``noise`` x unit std) and 10% feature dropout, the vector analogue of SCAN's image
    augmentations. The head with the lowest loss over all points is kept. Step 3
    self-labels: points whose prediction is more confident than ``threshold`` become
    targets for a strongly perturbed view (:func:`~gearsx.module.self_label_loss`).

    Returns
    -------
    Labels ``(n,)``, the trunk embedding ``(n, n_hidden)``, and a dict of diagnostics.
    """
    import torch

    from gearsx.module import ScanHead, scan_loss
    from gearsx.train import ScanTrainingPlan, fit_lightning

    # Checked here: torch's own errors name none of these, and an untrained head (max_epochs=0), a
    # threshold no prediction reaches, or a negative noise scale gave labels without a word.
    n_neighbors, n_hidden, n_heads, max_epochs, batch_size = (
        check_positive_int(v, name=name)
        for name, v in (
            ("n_neighbors", n_neighbors), ("n_hidden", n_hidden), ("n_heads", n_heads),
            ("max_epochs", max_epochs), ("batch_size", batch_size),
        )
    )  # fmt: skip
    self_label_epochs = check_positive_int(self_label_epochs, name="self_label_epochs", minimum=0)
    lr = check_positive_number(lr, name="lr")
    entropy_weight = check_nonnegative_number(entropy_weight, name="entropy_weight")
    noise = check_nonnegative_number(noise, name="noise")
    if not 0.0 < check_positive_number(threshold, name="threshold") < 1.0:
        msg = f"`threshold` must lie in (0, 1): a confidence no prediction reaches self-labels nothing; got {threshold!r}."
        raise ValueError(msg)
    rng = as_rng(random_state)
    seed = _seed(rng)
    z = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    k = min(n_neighbors, len(z) - 1)
    nbrs = knn(z, k, random_state=seed)[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = ScanHead(z.shape[1], n_clusters, n_hidden=n_hidden, n_heads=n_heads)
    data = torch.as_tensor(z, dtype=torch.float32)
    nbr_t = torch.as_tensor(nbrs, dtype=torch.long)

    def run(plan, epochs: int, phase_seed: int):
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.arange(len(z))),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(phase_seed),
        )
        fit_lightning(
            plan,
            loader,
            max_epochs=epochs,
            accelerator=accelerator,
            devices=1,
            progress=progress,
            random_state=phase_seed,
            reinitialise=False,
        )

    scan_plan = ScanTrainingPlan(head, data, nbr_t, phase="scan", lr=lr, noise=noise, entropy_weight=entropy_weight)
    run(scan_plan, max_epochs, seed)
    head = head.cpu().eval()
    with torch.no_grad():
        logits = head(data)
        totals, cons, ent = scan_loss(logits, logits[nbr_t[:, 0]], entropy_weight=entropy_weight)
    best = int(torch.argmin(totals))
    info = {
        "best_head": best,
        "scan_loss": float(totals[best]),
        "consistency": float(cons[best]),
        "entropy": float(ent[best]),
        "n_neighbors": k,
    }
    n_conf = 0
    if self_label_epochs > 0:
        head.train()  # Lightning keeps the mode it finds; the self-labelling phase trains
        label_plan = ScanTrainingPlan(
            head, data, nbr_t, phase="self_label", lr=lr * 0.1, noise=noise, threshold=threshold, head=best
        )
        run(label_plan, self_label_epochs, seed + 1)
        n_conf = label_plan.n_confident
    head = head.cpu().eval()
    with torch.no_grad():
        prob = torch.softmax(head(data)[:, best], dim=-1).numpy()
        emb = head.embed(data).numpy()
    if not (np.isfinite(prob).all() and np.isfinite(emb).all()):
        msg = "SCAN produced non-finite outputs; lower `lr` or check the features for extreme values."
        raise FloatingPointError(msg)
    info["n_confident"] = int(n_conf)
    info["mean_confidence"] = float(prob.max(1).mean())
    return prob.argmax(1), emb.astype(np.float32), info


def spatial_majority_vote(
    labels: np.ndarray, coords: np.ndarray, *, k: int = 6, groups: np.ndarray | None = None
) -> np.ndarray:
    """Relabel each point by the majority among itself and its ``k`` nearest physical neighbours.

    ``k=6`` is the first ring of a Visium hexagonal grid. A point keeps its own label when it
    ties for the majority. With ``groups`` (e.g. slides), neighbours are searched within each
    group only.
    """
    codes, labels_i = np.unique(labels, return_inverse=True)
    out = labels_i.copy()
    for sel, nbr in group_knn(coords, groups, k, clip=True):
        own = labels_i[sel]
        lab = np.column_stack([own, labels_i[nbr]])  # the point itself, then its neighbours
        counts = np.zeros((len(sel), len(codes)), dtype=np.int32)
        np.add.at(counts, (np.repeat(np.arange(len(sel)), lab.shape[1]), lab.ravel()), 1)
        keep = counts[np.arange(len(sel)), own] == counts.max(1)
        out[sel] = np.where(keep, own, counts.argmax(1))
    return codes[out]
