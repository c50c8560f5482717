"""The tutorials execute top to bottom (at a small size) so they cannot rot.

Each notebook runs in a fresh kernel with ``GEARSX_TUTORIAL_SMALL=1`` from the ``tutorials`` folder (so
``../shared/data`` resolves as for a user of a clone); a check cell appended by this test asserts on the
notebook's own results. Real-data notebooks run without the data too: they say where to get it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="tutorial execution needs the doc dependency group")
nbclient = pytest.importorskip("nbclient", reason="tutorial execution needs the doc dependency group")

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"

CHECKS = {
    "01_quickstart.ipynb": (
        "assert scores.loc['GEARS', 'spearman'] > scores.loc['PCA (2 PCs)', 'spearman'] + 0.1\n"
        "assert 'X_gears_spatial' in cells.obsm and cells.obs['gears_community'].nunique() > 1\n"
        "assert nhood_r > 0.3  # squidpy on the reconstruction agrees with squidpy on the truth"
    ),
    "02_real_data_vs_peers.ipynb": (
        "if HAVE_DATA:\n"
        "    assert set(table.index) >= {'gearsx'} and table.loc['gearsx', 'spearman'] > 0\n"
        "    assert q.obsm['X_gears_spatial'].shape == (held.n_obs, 2)"
    ),
    "03_spatial_domains_dlpfc.ipynb": (
        "if HAVE_DATA:\n"
        "    assert st.obsm['X_gears_domain'].shape == (st.n_obs, 30)\n"
        "    assert st.uns['gears_domain']['params']['use_rep'] == 'X_gears_domain'  # the new default\n"
        "    assert joint['ari'].mean() > 0.2 and adata.obs['gearsx (joint)'].nunique() == 7"
    ),
    "04_tasic_to_seqfish.ipynb": (
        "if HAVE_DATA:\n"
        "    assert q.uns['gears']['anchor']['mode'] == 'reference'  # the cells come from the reference's tissue\n"
        "    assert q.obsm['X_gears_spatial'].shape == (cells.n_obs, 2)\n"
        "    assert q.uns['gears']['anchor']['gene_agreement'] < 0.2  # another technology\n"
        "    assert q.uns['gears']['anchor']['expression_weight'] == 0.0  # so the embedding alone\n"
        "    assert 'gearsx, expression weighed' in table.index\n"
        "    assert table.loc['gearsx', 'layer order (glutamatergic)'] > table.loc['random', 'layer order (glutamatergic)']"
    ),
}


def _run(name: str):
    book = nbformat.read(TUTORIALS / name, as_version=4)
    book.cells.append(nbformat.v4.new_code_cell(CHECKS[name]))
    env_before = os.environ.get("GEARSX_TUTORIAL_SMALL")
    os.environ["GEARSX_TUTORIAL_SMALL"] = "1"
    try:
        client = nbclient.NotebookClient(
            book, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(TUTORIALS)}}
        )
        client.execute()
        return book
    finally:
        if env_before is None:
            del os.environ["GEARSX_TUTORIAL_SMALL"]
        else:
            os.environ["GEARSX_TUTORIAL_SMALL"] = env_before


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_tutorial_executes(name):
    assert (TUTORIALS / name).exists(), f"tutorial {name} is missing"
    book = _run(name)
    if name == "01_quickstart.ipynb":  # gx.settings.verbosity = "info" shows what training and reconstruction did
        err = "".join(o.get("text", "") for c in book.cells for o in c.get("outputs", []) if o.get("name") == "stderr")
        assert "INFO (gearsx): GEARS: training on" in err
        assert "INFO (gearsx): reconstruct:" in err


def test_every_tutorial_is_checked_and_stored_with_outputs():
    books = sorted(p.name for p in TUTORIALS.glob("*.ipynb"))
    assert books == sorted(CHECKS)
    for name in books:
        book = nbformat.read(TUTORIALS / name, as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert any(c.get("outputs") for c in code), f"{name} is stored without outputs; execute it before committing"


def test_stored_tutorials_show_their_plots():
    """A cell that draws with ``gx.pl`` stores a picture: executed with a non-interactive backend, it stores none."""
    for path in sorted(TUTORIALS.glob("*.ipynb")):
        book = nbformat.read(path, as_version=4)
        for i, cell in enumerate(book.cells):
            if cell.cell_type != "code" or "gx.pl." not in cell.source:
                continue
            kinds = {k for o in cell.get("outputs", []) for k in o.get("data", {})}
            assert "image/png" in kinds, (
                f"{path.name}, cell {i}, draws with gx.pl but stores no image; execute the notebook with an "
                "inline backend (unset MPLBACKEND)"
            )


def test_stored_tutorials_come_from_one_run_top_to_bottom():
    """Stored outputs are those of one fresh run in order: a cell edited and re-run alone, or an error, shows here."""
    for path in sorted(TUTORIALS.glob("*.ipynb")):
        book = nbformat.read(path, as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        counts = [c.get("execution_count") for c in code]
        assert counts == list(range(1, len(code) + 1)), (
            f"{path.name} stores execution counts {counts}: re-execute it from a fresh kernel, top to bottom"
        )
        errors = [i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
        assert not errors, f"{path.name} stores an error in code cell(s) {errors}"
