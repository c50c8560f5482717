import logging
import subprocess
import sys
from importlib.metadata import version

import pytest

import gearsx as gx


def test_version_from_metadata():
    assert gx.__version__ == version("gearsx")


def test_namespaces_present():
    for name in ("pp", "tl", "pl", "model", "module", "geometry", "datasets", "metrics"):
        assert hasattr(gx, name), name


def test_import_is_fast_and_light():
    code = (
        "import sys, time; t = time.perf_counter(); import gearsx; dt = time.perf_counter() - t; "
        "heavy = [m for m in ('torch', 'scanpy', 'sklearn', 'anndata', 'matplotlib') if m in sys.modules]; "
        "print(dt); print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert float(out[0]) < 3.0
    assert out[1] == "", f"heavy modules imported by `import gearsx`: {out[1]}"


def test_settings_repr_and_verbosity():
    old = gx.settings.verbosity
    try:
        gx.settings.verbosity = "INFO"
        assert gx.settings.verbosity == "info"
        gx.settings.verbosity = 1  # scanpy's integers
        assert gx.settings.verbosity == "warning"
        gx.settings.verbosity = logging.DEBUG
        assert gx.settings.verbosity == "debug"
        assert "progress_bar" in repr(gx.settings)
        with pytest.raises(ValueError, match="verbosity"):
            gx.settings.verbosity = "loud"
    finally:
        gx.settings.verbosity = old


def test_verbosity_info_shows_messages_on_stderr():
    """A user who sets verbosity to 'info' sees gearsx's INFO lines (no logging set-up of their own)."""
    code = (
        "import logging, gearsx as gx; gx.settings.verbosity = 'info'; "
        "logging.getLogger('gearsx.tl').info('hello from tl'); logging.getLogger('gearsx.pp').debug('hidden'); "
        "gx.settings.verbosity = 'warning'; logging.getLogger('gearsx.tl').info('quiet now')"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "INFO (gearsx): hello from tl" in err
    assert "hidden" not in err
    assert "quiet now" not in err


def test_old_argument_names_warn_and_still_work():
    import anndata as ad
    import numpy as np

    rng = np.random.default_rng(0)
    adata = ad.AnnData(np.zeros((120, 1), dtype=np.float32))
    adata.obsm["spatial"] = rng.uniform(size=(120, 2))
    adata.obsm["emb"] = rng.normal(size=(120, 4)).astype(np.float32)
    with pytest.warns(FutureWarning, match="`embedding_key` of GEARS.__init__\\(\\) is renamed `use_rep`"):
        geo = gx.model.GEARS(adata, embedding_key="emb", n_out=4, dim=16, n_heads=2, n_inducing=4)
    assert geo.setup_args["use_rep"] == "emb"
    with pytest.warns(FutureWarning, match="renamed `progress`"):
        geo.train(
            max_epochs=1, n_batches=1, batch_size=1, n_min=30, n_max=40, validation=None, enable_progress_bar=False
        )
    with pytest.raises(TypeError, match="pass `progress` only"):
        geo.train(enable_progress_bar=False, progress=False)
