import json

import pandas as pd
import pytest

from gearsx.__main__ import main


def _run_demo(out, capsys, cells: int, epochs: int) -> str:
    """Run ``gearsx demo`` into ``out`` and return what it printed."""
    assert main(["demo", "--out", str(out), "--cells-per-slide", str(cells), "--gears-epochs", str(epochs)]) == 0
    return capsys.readouterr().out


def test_demo_writes_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    printed = _run_demo(out, capsys, 3000, 2)
    assert "[6/6]" in printed
    # the geometry model's validation is a band of each slide (the default split), and the line says which
    assert "held-out minisets, validation region (20% band of each slide):" in printed
    assert str(out.resolve()) in printed
    table = pd.read_csv(out / "metrics.csv", index_col=0)
    assert list(table.index) == [
        "GEARS (gx.tl.reconstruct)",
        "baseline: expression PCA (2 PCs)",
        "baseline: random coordinates",
    ]
    assert abs(table.loc["baseline: random coordinates", "spearman"]) < 0.1
    # even briefly trained, the reconstruction is far better than random and better than PCA
    gears = table.loc["GEARS (gx.tl.reconstruct)"]
    assert gears["spearman"] > 0.3
    assert gears["spearman"] > table.loc["baseline: expression PCA (2 PCs)", "spearman"]
    for name in ("layouts.png", "reconstruction.png", "distortion.png", "stitching.png"):
        assert (out / name).stat().st_size > 10_000, name
    assert "GEARS" in (out / "metrics.md").read_text()
    report = json.loads((out / "report.json").read_text())
    assert 0.0 < report["encoder"]["knn_overlap20"] <= 1.0
    assert report["encoder"]["slides"] == ["slide_0", "slide_1", "slide_2"]  # arrays in the record, lists here
    assert len(report["encoder"]["knn_overlap20_per_slide"]) == 3
    assert report["adapter_after"]["domain_accuracy"] < report["adapter_before"]["domain_accuracy"]
    assert report["reconstruct"]["graph"]["n_components"] == 1
    assert -1.0 <= report["communities_ari_vs_true_domains"] <= 1.0


def test_demo_on_slides_too_small_to_hold_a_band_out(tmp_path, capsys):
    """At its smallest size no slide holds a validation band: the demo says so instead of failing."""
    out = tmp_path / "small"
    printed = _run_demo(out, capsys, 1000, 1)
    assert "validation none" in printed
    assert "no figures (nothing held out)" in printed
    assert "GEARS" in (out / "metrics.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gears-epochs", "0"], "--gears-epochs must be an integer >= 1"),
        (["--cells-per-slide", "50"], "--cells-per-slide must be an integer >= 1000"),
        (["--seed", "-1"], "--seed must be an integer >= 0"),
    ],
)
def test_demo_options_fail_at_once_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["demo", *argv])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_demo_refuses_a_file_as_its_folder(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(target)])
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me"
