"""Side-by-side comparison of methods on reconstruction or domain metrics (seaborn)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from gearsx._utils import checks_flags

from ._reconstruction import _axes, _finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["method_comparison"]

#: Metrics where lower is better (marked in the panel titles).
_LOWER_IS_BETTER = ("stress1", "swd", "w1_knn")


@checks_flags
def method_comparison(
    scores: pd.DataFrame,
    *,
    metrics: Sequence[str] = ("spearman", "stress1", "edge_auc"),
    method_key: str | None = "method",
    hue: str | None = None,
    palette: str | Sequence[str] | Mapping[str, str] | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | None = None,
):
    """Bar chart of metrics per method, one panel per metric, runs (seeds, data sets) as dots.

    Bars are the mean over the rows of each method (and ``hue`` group), error bars the standard
    deviation, and every row is drawn as a dot, so a lead within seed noise is visible as such.
    Built on :func:`seaborn.barplot` and :func:`seaborn.stripplot`.

    Parameters
    ----------
    scores
        One row per method and run: e.g. the concatenated outputs of
        :func:`gearsx.metrics.evaluate_adata`, or a benchmark table, with a column per metric.
    metrics
        Columns to plot, one panel each (titles mark lower-is-better metrics with ↓).
    method_key
        Column with the method name; ``None`` uses the index.
    hue
        Optional column splitting each method's bar (e.g. ``'dataset'``).
    palette
        Colours (seaborn's ``palette``).
    ax
        One axes per metric (default: a new figure).
    show, save
        As in :func:`gearsx.pl.reconstruction`.

    Returns
    -------
    A ``list`` of axes (one per metric), unless shown.

    Examples
    --------
    >>> scores = pd.concat([gx.metrics.evaluate_adata(adata_sc, k, "spatial_gt") for k in keys])  # doctest: +SKIP
    >>> gx.pl.method_comparison(scores, method_key=None)  # doctest: +SKIP
    """
    import seaborn as sns

    metrics = [metrics] if isinstance(metrics, str) else list(metrics)  # a bare name would be read letter by letter
    table = scores.reset_index() if method_key is None else scores.copy()
    key = table.columns[0] if method_key is None else method_key
    missing = [c for c in (key, *metrics, *([hue] if hue else [])) if c not in table.columns]
    if missing:
        msg = f"`scores` lacks the column(s) {missing}; available: {list(table.columns)}."
        raise KeyError(msg)
    if not metrics:
        msg = "`metrics` is empty; name at least one column of `scores`."
        raise ValueError(msg)
    if table.empty:
        msg = "`scores` has no rows; pass one row per method and run."
        raise ValueError(msg)
    text = [m for m in metrics if not pd.api.types.is_numeric_dtype(table[m])]
    if text:
        msg = f"`scores` column(s) {text} are not numeric ({[str(table[m].dtype) for m in text]}); convert them first."
        raise TypeError(msg)
    table[key] = table[key].astype(str)
    for metric in metrics:
        gaps = table.loc[table[metric].isna(), key]
        if len(gaps):
            warnings.warn(
                f"`scores[{metric!r}]` is missing for {len(gaps)} row(s) (methods {sorted(set(gaps))}); "
                "their bars average the other rows only.",
                UserWarning,
                stacklevel=2,
            )
    order = list(dict.fromkeys(table[key]))
    # a panel widens with the methods and heightens with their longest name, written upright below it
    longest = max(map(len, order))
    width = max(3.6, 1.0 + 0.35 * len(order))
    height = max(3.4, 2.8 + 0.07 * longest)
    fig, axes = _axes(ax, len(metrics), figsize=(width * len(metrics), height))
    for a, metric in zip(axes, metrics, strict=True):
        kw = {"data": table, "x": key, "y": metric, "order": order, "ax": a}
        sns.barplot(**kw, hue=hue if hue else key, palette=palette, errorbar="sd", capsize=0.15, legend=bool(hue))
        sns.stripplot(**kw, hue=hue, dodge=bool(hue), color="k" if not hue else None, size=3, legend=False)
        a.set_title(f"{metric} {'↓' if metric in _LOWER_IS_BETTER else '↑'}")
        a.set_xlabel("")
        a.set_ylabel(metric)
        a.tick_params(axis="x", rotation=_label_rotation(a, len(order), longest))
    return _finish(fig, axes, show=show, save=save)


def _label_rotation(ax: Axes, n_names: int, longest: int) -> int:
    """Return 0 when ``n_names`` names of up to ``longest`` characters fit side by side under ``ax``'s bars, else 90.

    A name of ``c`` characters takes about ``0.6 c`` font sizes (matplotlib's ``xtick.labelsize``);
    it fits in 90% of its bar's share of the axis width. Rotated by less than 90 degrees, long names
    overlapped their neighbours and drifted off their bars (ten representations of a domain benchmark).
    """
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    share = ax.get_position().width * ax.figure.get_figwidth() * 72 / n_names  # points per bar
    size = FontProperties(size=rcParams["xtick.labelsize"]).get_size_in_points()
    return 0 if 0.6 * size * longest < 0.9 * share else 90
