import json

import pandas as pd

from gearsx.__main__ import main


def test_demo_writes_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cells-per-slide", "3000", "--gears-epochs", "2"]) == 0
    printed = capsys.readouterr().out
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
