from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: Real public data sets live next to the repository, never inside it.
SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def shared_file(*parts: str) -> Path:
    """Path to a file under ../shared/data, skipping the test with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data set not available: {path} (expected ../shared/data beside the repository)")
    return path


@pytest.fixture(scope="session")
def small_tissue():
    import gearsx as gx

    return gx.datasets.simulate_tissue(n_slides=3, n_cells_per_slide=6000, n_genes=120, random_state=0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
