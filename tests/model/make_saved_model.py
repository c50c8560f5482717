"""Regenerate the tiny saved-model fixture: ``python -m tests.model.make_saved_model``.

Run only when the format_version changes (then add a new folder, keep the old one).
"""

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import gearsx as gx

HERE = Path(__file__).parent / "saved_model" / "v1"


def tiny_adata() -> ad.AnnData:
    rng = np.random.default_rng(123)
    n, g = 60, 12
    x = rng.normal(size=(n, g)).astype(np.float32)
    obs = pd.DataFrame({"slide": np.repeat(["a", "b"], n // 2)}, index=[f"spot{i}" for i in range(n)])
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    adata.layers["gears_centered"] = x
    adata.obsm["spatial"] = rng.uniform(0, 100, (n, 2))
    return adata


def main() -> None:
    adata = tiny_adata()
    gx.model.SharedEncoder.setup_anndata(adata, slide_key="slide")
    model = gx.model.SharedEncoder(adata, n_hidden=(8,), n_latent=4)
    model.train(max_epochs=2, batch_size=16, n_spatial_neighbors=3, progress=False)
    model.save(HERE, overwrite=True)
    np.save(HERE / "expected_latent.npy", model.get_latent_representation())


if __name__ == "__main__":
    main()
