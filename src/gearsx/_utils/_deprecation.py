from __future__ import annotations

import functools
import warnings

__all__ = ["renamed_arguments"]


def renamed_arguments(**renames: str):
    """Accept old keyword names of a function, with a :class:`FutureWarning` naming the new ones.

    ``@renamed_arguments(enable_progress_bar="progress")`` lets ``f(enable_progress_bar=False)``
    keep working as ``f(progress=False)``. Passing both names is an error.
    """

    def decorator(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        msg = f"{func.__qualname__}() got both `{old}` and its new name `{new}`; pass `{new}` only."
                        raise TypeError(msg)
                    warnings.warn(
                        f"`{old}` of {func.__qualname__}() is renamed `{new}`; the old name will be removed.",
                        FutureWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper

    return decorator
