from ._dask import check_client, resolve_client
from ._deprecation import renamed_arguments
from ._device import resolve_device
from ._docs import doc_params
from ._dtypes import index_dtype
from ._fingerprint import array_fingerprint, module_fingerprint, names_fingerprint, sampled_rows
from ._progress import progress_bar
from ._random import as_rng
from ._validation import (
    check_coords,
    check_flag,
    check_fraction,
    check_nonnegative_number,
    check_positions,
    check_positive_int,
    check_positive_number,
    checks_flags,
    n_distinct_rows,
    plain,
)

__all__ = [
    "array_fingerprint",
    "as_rng",
    "check_client",
    "doc_params",
    "index_dtype",
    "module_fingerprint",
    "names_fingerprint",
    "progress_bar",
    "resolve_client",
    "check_coords",
    "check_flag",
    "check_fraction",
    "check_positions",
    "check_nonnegative_number",
    "check_positive_int",
    "check_positive_number",
    "checks_flags",
    "n_distinct_rows",
    "plain",
    "renamed_arguments",
    "resolve_device",
    "sampled_rows",
]
