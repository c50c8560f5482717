from __future__ import annotations

import numpy as np

from gearsx._utils import check_coords, checks_flags

__all__ = ["gauge_fix", "procrustes"]


def gauge_fix(x: np.ndarray) -> np.ndarray:
    """Centre a point cloud and scale it to unit root-mean-square norm.

    This removes the translation and global-scale gauge of an intrinsic geometry
    (see :ref:`gears-minisets`). Rotation and reflection are left alone; see :func:`procrustes`.

    Parameters
    ----------
    x
        Coordinates, shape ``(n, d)``.

    Returns
    -------
    The gauge-fixed coordinates, ``(n, d)`` float64. A cloud of coincident points
    (zero spread) is returned centred, without scaling.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import gauge_fix
    >>> y = gauge_fix(np.array([[0.0, 0.0], [2.0, 0.0]]))
    >>> float(np.sqrt((y**2).sum(1).mean()))
    1.0
    """
    x = check_coords(x, name="x")
    xc = x - x.mean(axis=0, keepdims=True)
    rms = np.sqrt((xc**2).sum(axis=1).mean())
    return xc / rms if rms > 0 else xc


@checks_flags
def procrustes(source: np.ndarray, target: np.ndarray, *, reflection: bool = True) -> np.ndarray:
    """Orthogonal matrix ``R`` minimising ``||source @ R - target||_F``.

    Solves the orthogonal Procrustes problem by SVD of ``source.T @ target``
    (the same solution as :func:`scipy.linalg.orthogonal_procrustes`, which
    always allows reflections). With ``reflection=False`` the solution is
    restricted to proper rotations (``det R = +1``) by flipping the sign of the
    last singular direction, as in the Kabsch algorithm.

    Parameters
    ----------
    source, target
        Corresponding point sets, shape ``(n, d)``; centre them first if
        translations should be removed.
    reflection
        Allow improper rotations (reflections).

    Returns
    -------
    ``R`` with shape ``(d, d)``.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import procrustes
    >>> rotation = np.array([[np.cos(0.7), -np.sin(0.7)], [np.sin(0.7), np.cos(0.7)]])
    >>> x = np.random.default_rng(0).normal(size=(50, 2))
    >>> bool(np.allclose(procrustes(x, x @ rotation), rotation))
    True
    """
    source = check_coords(source, name="source")
    target = check_coords(target, name="target")
    if source.shape != target.shape:
        msg = f"`source` and `target` must have the same shape; got {source.shape} and {target.shape}."
        raise ValueError(msg)
    u, _, vt = np.linalg.svd(source.T @ target)
    if not reflection and np.linalg.det(u @ vt) < 0:
        u[:, -1] *= -1
    return u @ vt


def _similarity_fit(y: np.ndarray, target: np.ndarray, *, weights=None, reflection: bool = True) -> np.ndarray:
    """``y`` moved onto ``target`` by the least-squares similarity transform (rotation, scale, shift).

    ``weights`` (default: equal) weigh each point's squared residual; ``reflection`` allows improper
    rotations. Returns the transformed ``y``, in ``target``'s frame.
    """
    w = np.full(len(y), 1.0 / len(y)) if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
    yc, tc = y - w @ y, target - w @ target
    root = np.sqrt(w)[:, None]
    mapped = yc @ procrustes(root * yc, root * tc, reflection=reflection)
    scale = float((w[:, None] * mapped * tc).sum() / max(float(w @ (yc**2).sum(1)), 1e-300))
    return scale * mapped + w @ target
