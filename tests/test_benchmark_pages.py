"""The benchmark scripts regenerate their result pages without losing the readings written by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

# the benchmark scripts are not a package: load their helpers from the file, leaving sys.path alone
_spec = importlib.util.spec_from_file_location(
    "bench_common", Path(__file__).resolve().parents[1] / "benchmarks" / "_common.py"
)
_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_common)
write_results = _common.write_results


def test_new_page_is_written_as_generated(tmp_path):
    page = tmp_path / "results" / "table.md"
    write_results(page, "# Title\n\n| a |\n|---|\n| 1 |\n\n", stamp=False)
    assert page.read_text() == "# Title\n\n| a |\n|---|\n| 1 |\n"


def test_rerun_replaces_the_tables_and_keeps_the_reading(tmp_path, capsys):
    page = tmp_path / "table.md"
    reading = "## Reading\n\n- the old figure was 0.5\n\n## Noticed\n\n- something\n"
    page.write_text("# Title\n\n| a |\n|---|\n| 1 |\n\nCommand: `old`\n\n" + reading)
    write_results(page, "# Title\n\n| a |\n|---|\n| 2 |\n", stamp=False)
    text = page.read_text()
    assert text == "# Title\n\n| a |\n|---|\n| 2 |\n\n" + reading
    assert "| 1 |" not in text
    assert "Command: `old`" not in text
    message = capsys.readouterr().out
    assert "## Reading" in message
    assert "## Noticed" in message
    assert "revise" in message


@pytest.mark.parametrize("old", ["# Title\n\n| a |\n|---|\n| 1 |\n", "# Title\n\n### not a reading\n"])
def test_page_without_a_reading_is_replaced_whole(tmp_path, capsys, old):
    page = tmp_path / "table.md"
    page.write_text(old)
    write_results(page, "# New\n", stamp=False)
    assert page.read_text() == "# New\n"
    assert capsys.readouterr().out == ""


def test_page_names_the_code_and_package_versions_of_its_run(tmp_path):
    """A figure can move with a library version: the generated part ends with the commit and the versions used."""
    from importlib.metadata import version

    page = tmp_path / "table.md"
    page.write_text("# Old\n\n## Reading\n\n- kept\n")
    write_results(page, "# Title\n\n| a |\n|---|\n| 2 |\n")
    generated, reading = page.read_text().split("## Reading")
    stamp = generated.strip().splitlines()[-1]
    assert stamp.startswith("Environment of the run that wrote this page: gearsx at ")
    for name in ("numpy", "scipy", "torch", "scanpy", "anndata", "scikit-learn"):
        assert f"{name} {version(name)}" in stamp
    assert reading == "\n\n- kept\n"
    assert "--append" not in stamp  # a script without --append keeps no earlier rows, and its page says nothing of them


def test_stamp_names_the_whole_install_and_keeps_its_package_list_beside_the_page(tmp_path):
    """Two runs with the same versions of the named packages can still differ: the line names the whole
    install by a fingerprint of every package's version (the list itself is kept next to the page) and the
    machine (its processor and the instruction set of torch's kernels)."""
    import hashlib
    import re
    from importlib.metadata import version

    import torch

    page = tmp_path / "results" / "table.md"
    write_results(page, "# Title\n")
    stamp = page.read_text().strip().splitlines()[-1]
    found = re.search(
        r"; install ([0-9a-f]{12}) \(every package: `environments/([0-9a-f]{12})\.txt` beside this page\); CPU ", stamp
    )
    assert found is not None, stamp
    assert found.group(1) == found.group(2)
    listing = (page.parent / "environments" / f"{found.group(1)}.txt").read_text()
    assert hashlib.sha256(listing.encode()).hexdigest()[:12] == found.group(1)
    lines = listing.splitlines()
    assert lines == sorted(set(lines))
    for name in ("numpy", "scipy", "torch", "scikit-learn", "anndata"):
        assert f"{name}=={version(name)}" in lines
    # one version more or less is another install
    changed = listing.replace(f"numpy=={version('numpy')}", "numpy==0.0.1")
    assert _common.install_fingerprint(changed) != found.group(1)
    assert stamp.endswith(f" cores, torch kernels {torch.backends.cpu.get_cpu_capability()}).")
    # a second page of the same install reuses the list
    write_results(page.parent / "other.md", "# Other\n")
    assert len(list((page.parent / "environments").iterdir())) == 1


def test_stamp_of_a_script_with_append_says_where_kept_rows_come_from(tmp_path):
    page = tmp_path / "table.md"
    write_results(page, "# Title\n", appendable=True)
    stamp = page.read_text().strip().splitlines()[-1]
    assert stamp.startswith("Environment of the run that wrote this page: gearsx at ")
    assert stamp.endswith("Rows kept with `--append` come from the runs before it.")


def test_first_table_reads_the_per_seed_rows(tmp_path):
    """``--append`` reads back the first table of a page: its rows, by header, as text; the later tables are not read."""
    page = tmp_path / "peers.md"
    page.write_text(
        "# Title\n\n|Spearman| of something (not a table)\n\n| data | seed | method | spearman | mode |\n"
        "|---|---|---|---|---|\n"
        "| seqfish | 0 | oracle | 0.986 |  |\n| seqfish | 1 | gearsx | 0.171 | reference |\n\n"
        "Mean:\n\n| data | method | spearman |\n|:--|:--|--:|\n| seqfish | gearsx | 0.2 ± 0.0 |\n"
    )
    rows = _common.first_table(page)
    assert rows == [
        {"data": "seqfish", "seed": "0", "method": "oracle", "spearman": "0.986", "mode": ""},
        {"data": "seqfish", "seed": "1", "method": "gearsx", "spearman": "0.171", "mode": "reference"},
    ]
    assert _common.first_table(tmp_path / "missing.md") == []
    assert _common.as_number(rows[1]["spearman"]) == 0.171
    assert np.isnan(_common.as_number("-"))
    assert np.isnan(_common.as_number(""))


def test_mean_sd_table_known_answer():
    import pandas as pd

    table = pd.DataFrame({"method": ["b", "a", "b"], "score": [1.0, 5.0, 3.0]})
    text = _common.mean_sd_markdown(table, "method", ["score"])
    rows = [line for line in text.splitlines() if line.startswith("| b") or line.startswith("| a")]
    assert [r.split("|")[1].strip() for r in rows] == ["b", "a"]  # groups in order of appearance
    assert "2.0 ± 1.414" in rows[0]  # mean of 1 and 3, sample SD sqrt(2)
    assert "5.0 ± 0.0" in rows[1]  # one row: SD 0, not NaN


def _cells(x):
    import anndata as ad

    a = ad.AnnData(np.asarray(x, dtype=np.float32))
    a.obsm["spatial"] = np.arange(2 * a.n_obs, dtype=float).reshape(-1, 2)
    return a


def test_split_counts_thins_integer_counts_into_independent_halves():
    """Same-cells protocol: a Poisson count thinned at 1/2 gives two independent Poisson halves that add back up."""
    counts = np.random.default_rng(0).poisson(4.0, size=(2000, 50))
    counts[7] = 0  # a cell without counts is dropped from both halves
    first, second = _common.split_counts(_cells(counts), seed=1)
    assert first.n_obs == second.n_obs == 1999
    np.testing.assert_array_equal(first.obsm["spatial"], np.delete(_cells(counts).obsm["spatial"], 7, axis=0))
    kept = np.delete(counts, 7, axis=0)
    a, b = first.X.toarray(), second.X.toarray()
    np.testing.assert_array_equal(a + b, kept)  # every count goes to exactly one half
    assert abs(a.mean() - 2.0) < 0.05
    assert abs(b.mean() - 2.0) < 0.05
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.02  # a fixed split (counts // 2) would correlate


def test_split_counts_draws_scaled_values_twice():
    """Values that are not counts (MERFISH's volume-scaled ones) get two Poisson draws of half their value."""
    x = np.full((3000, 20), 3.3)
    first, second = _common.split_counts(_cells(x), seed=2)
    a, b = first.X.toarray(), second.X.toarray()
    assert np.allclose(a, np.rint(a))
    assert abs(a.mean() - 1.65) < 0.03
    assert abs(b.mean() - 1.65) < 0.03
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.02
    again = _common.split_counts(_cells(x), seed=2)[0].X.toarray()
    np.testing.assert_array_equal(again, a)  # seeded
