"""The README's example, extracted from README.md itself and run as a user would paste it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text[text.index("## Example") :]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, "README.md has no ```python block under '## Example'"
    return match.group(1)


def test_readme_example_runs(monkeypatch):
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    import gearsx as gx

    monkeypatch.setattr(gx.settings, "progress_bar", False)
    code = _example()
    assert "sc = " not in code.replace("adata_sc = ", ""), "the example must not shadow `import scanpy as sc`"
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    plt.close("all")
    adata_st, adata_sc = namespace["adata_st"], namespace["adata_sc"]
    assert adata_sc.obsm["X_gears_spatial"].shape == (adata_sc.n_obs, 2)
    assert np.isfinite(adata_sc.obsm["X_gears_spatial"]).all()
    assert namespace["scores"].loc["X_gears_spatial", "spearman"] > 0.3
    assert adata_sc.obs["gears_community"].nunique() > 1
    # the cells were anchored on the slides, and every cell of a type counts once in the type's spot map
    counts = adata_sc.obs["cell_type"].value_counts()
    mapped = adata_st.obsm["gears_cell_type"].sum()
    np.testing.assert_allclose(mapped[counts.index].to_numpy(), counts.to_numpy(), rtol=1e-5)
    assert adata_st.obs["gears_domain"].nunique() == 6
    # refine=True and the domain embedding followed the slide column fit_encoder recorded
    assert adata_st.uns["gears_domain"]["params"]["slide_key"] == "slide"
    assert adata_st.uns["gears_domain"]["params"]["use_rep"] == "X_gears_domain"
    assert adata_st.uns["X_gears_domain"]["params"]["slide_key"] == "slide"


@pytest.mark.parametrize("name", ["adata_st", "adata_sc"])
def test_readme_names_the_objects(name):
    assert name in _example()
