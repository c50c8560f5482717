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


@pytest.fixture(autouse=True)
def _gearsx_logs_reach_caplog():
    """gearsx's logger prints through its own handler and does not propagate; let pytest's caplog see it."""
    import logging

    logger = logging.getLogger("gearsx")
    old = logger.propagate
    logger.propagate = True
    yield
    logger.propagate = old


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def device_atol() -> float:
    """Absolute tolerance between a float32 model's outputs on the default device (``accelerator='auto'``) and on the CPU.

    Without a GPU both are the CPU: the same weights give the same numbers. With CUDA the GPU's
    kernels round differently: a model trained there and reloaded on the CPU differed by up to 4e-6
    (an H200).
    """
    import torch

    return 5e-5 if torch.cuda.is_available() else 1e-6


@pytest.fixture(scope="session")
def trained_encoder():
    """The simulator (3 slides + SC, batch effects), prepared and centred, with a trained encoder and adapter.

    Session-scoped: the encoder tests and the geometry-model tests share one training run (~70 s).
    """
    import gearsx as gx

    st, sc = gx.datasets.simulate_tissue(random_state=0)
    st, sc = gx.pp.prepare(st, sc, slide_key="slide", n_top_genes=2000)
    gx.pp.mean_center_per_slide(st, slide_key="slide")
    gx.pp.mean_center_per_slide(sc, slide_key=None)
    model = gx.tl.fit_encoder(st, slide_key="slide", progress=False)
    gx.tl.fit_adapter(sc, model)
    return st, sc, model


@pytest.fixture(scope="session")
def trained_gears(trained_encoder):
    """A GEARS model trained briefly (64 steps) on two simulator slides; the third is held out for validation."""
    import gearsx as gx

    st = trained_encoder[0].copy()
    geo = gx.model.GEARS(st, slide_key="slide")
    geo.train(max_epochs=4, n_batches=16, validation="slide", random_state=0, progress=False)
    return st, geo
