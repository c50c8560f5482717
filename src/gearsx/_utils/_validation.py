from __future__ import annotations

import functools
import inspect
import numbers

import numpy as np

__all__ = [
    "check_coords",
    "check_flag",
    "check_positions",
    "check_positive_int",
    "checks_flags",
    "n_distinct_rows",
    "plain",
]


def plain(value):
    """Return a NumPy scalar as the Python value it holds, anything else as it is.

    For messages that name a label taken from an array: ``f"{plain(v)!r}"`` shows ``'s1'`` or ``3``,
    where NumPy 2's own repr shows ``np.str_('s1')`` or ``np.int64(3)``.
    """
    return value.item() if isinstance(value, np.generic) else value


def n_distinct_rows(x: np.ndarray) -> int:
    """Return how many distinct rows ``x`` holds (exact equality, ``-0.0`` as ``0.0``; hashed, linear time)."""
    import pandas as pd

    x = np.ascontiguousarray(np.asarray(x) + 0)  # + 0 turns -0.0 into 0.0, which compares equal but differs in bytes
    if x.shape[0] == 0:
        return 0
    rows = x.reshape(len(x), -1).view(np.dtype((np.void, x.dtype.itemsize * int(np.prod(x.shape[1:])))))
    return len(pd.unique(rows.ravel()))


def check_coords(x, *, name: str = "X", min_points: int = 1, n_dims: int | None = None) -> np.ndarray:
    """Validate a coordinate array and return it as a float64 ``(n, d)`` array.

    Raises a :class:`ValueError` naming ``name`` when the array is not 2-D, has too
    few rows, the wrong number of columns, or holds NaN/inf.
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        msg = f"`{name}` must be a 2-D array of shape (n_points, n_dims); got an array with shape {arr.shape}."
        raise ValueError(msg)
    if not np.issubdtype(arr.dtype, np.number):
        msg = f"`{name}` must be numeric; got dtype {arr.dtype}."
        raise ValueError(msg)
    arr = arr.astype(np.float64, copy=False)
    if n_dims is not None and arr.shape[1] != n_dims:
        msg = f"`{name}` must have {n_dims} columns; got shape {arr.shape}."
        raise ValueError(msg)
    if arr.shape[0] < min_points:
        msg = f"`{name}` has {arr.shape[0]} points; at least {min_points} are needed here."
        raise ValueError(msg)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        msg = f"`{name}` contains NaN or inf in {bad} of {arr.shape[0]} rows; remove or impute those points first."
        raise ValueError(msg)
    return arr


def check_positive_int(value, *, name: str, minimum: int = 1) -> int:
    """Return ``value`` as ``int`` or raise a :class:`ValueError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        msg = f"`{name}` must be an integer >= {minimum}; got {value!r}."
        raise ValueError(msg)
    return int(value)


def check_flag(value, *, name: str, optional: bool = False) -> bool | None:
    """Return ``value`` as a Python ``bool`` (``None`` kept where ``optional``), or raise a :class:`TypeError` naming ``name``.

    Python would read any object as a truth value, so a string such as ``'no'`` or ``'False'``
    reads as True; a flag is refused unless it is a ``bool`` or a NumPy bool.
    """
    if optional and value is None:
        return None
    if not isinstance(value, bool | np.bool_):
        choices = "True, False or None" if optional else "True or False"
        msg = f"`{name}` must be {choices}; got {value!r}."
        raise TypeError(msg)
    return bool(value)


def _flag_kind(annotation) -> bool | None:
    """Return ``False`` for a ``bool`` annotation, ``True`` for ``bool | None``, ``None`` for anything else.

    Annotations are strings under ``from __future__ import annotations``, objects otherwise.
    """
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return {"bool": False, "bool|None": True, "None|bool": True}.get(text.replace(" ", ""))


def checks_flags(func):
    """Check every parameter of ``func`` annotated ``bool`` (or ``bool | None``) with :func:`check_flag` before the call.

    One decorator rather than a check in each body, so that a new flag of a public function is
    checked by being annotated; ``tests/test_flags.py`` holds every public function to it. NumPy
    bools reach ``func`` as Python bools. A call that does not bind (a missing or unknown argument)
    is passed through unchanged, for Python's own error.
    """
    signature = inspect.signature(func)
    flags = {
        name: kind for name, param in signature.parameters.items() if (kind := _flag_kind(param.annotation)) is not None
    }
    if not flags:
        msg = f"{func.__qualname__}() has no parameter annotated `bool`; `checks_flags` does nothing there."
        raise TypeError(msg)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return func(*args, **kwargs)
        for name, optional in flags.items():
            if name in bound.arguments:
                bound.arguments[name] = check_flag(bound.arguments[name], name=name, optional=optional)
        return func(*bound.args, **bound.kwargs)

    wrapper.checked_flags = tuple(flags)
    return wrapper


def _as_float(value) -> float:
    """``value`` as a ``float``; NaN (which every check below refuses) for a bool or anything not a number."""
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def check_fraction(value, *, name: str) -> float:
    """Return ``value`` as a ``float`` in ``[0, 1]`` or raise a :class:`ValueError` naming ``name``."""
    v = _as_float(value)
    if not 0.0 <= v <= 1.0:
        msg = f"`{name}` must be a number in [0, 1]; got {value!r}."
        raise ValueError(msg)
    return v


def check_nonnegative_number(value, *, name: str) -> float:
    """Return ``value`` as a finite ``float`` of at least 0 (a loss weight, a decay) or raise a :class:`ValueError` naming ``name``."""
    v = _as_float(value)
    if not np.isfinite(v) or v < 0:
        msg = f"`{name}` must be a finite number >= 0; got {value!r}."
        raise ValueError(msg)
    return v


def check_positive_number(value, *, name: str, hint: str = "") -> float:
    """Return ``value`` as a finite ``float`` above 0 or raise a :class:`ValueError` naming ``name`` (``hint`` appended)."""
    v = _as_float(value)
    if not np.isfinite(v) or v <= 0:
        msg = f"`{name}` must be a positive number{hint}; got {value!r}."
        raise ValueError(msg)
    return v


def check_positions(
    index,
    n: int,
    *,
    name: str,
    min_size: int = 0,
    unique: bool = False,
    range_error: type[Exception] = IndexError,
) -> np.ndarray:
    """Return ``index`` as a 1-D ``int64`` array of positions in ``[0, n)``, or raise naming ``name``.

    numpy would read a boolean mask as positions 0 and 1 once cast, truncate float positions
    towards zero, and count negative ones from the end; each is refused here, the mask with the
    fix (``np.flatnonzero``).
    """
    raw = np.asarray(index)
    if raw.dtype == bool or (raw.size and not np.issubdtype(raw.dtype, np.integer)):
        hint = " (a boolean mask: pass `np.flatnonzero(mask)`)" if raw.dtype == bool else ""
        msg = f"{name} must hold integer positions; got dtype {raw.dtype}{hint}."
        raise TypeError(msg)
    if raw.ndim != 1 or len(raw) < min_size:
        at_least = f" of at least {min_size} observations" if min_size else ""
        msg = f"{name} must be a 1-D index array{at_least}; got shape {raw.shape}."
        raise ValueError(msg)
    out = raw.astype(np.int64, copy=False)
    if out.size and (out.min() < 0 or out.max() >= n):
        msg = f"{name} has indices outside [0, {n})."
        raise range_error(msg)
    if unique and len(np.unique(out)) != len(out):
        msg = f"{name} repeats an index; each observation may appear once."
        raise ValueError(msg)
    return out
