import json

import pandas as pd

from gearsx.__main__ import main


def test_demo_writes_outputs_and_is_honest(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cells-per-slide", "2000"]) == 0
    printed = capsys.readouterr().out
    assert "not implemented yet" in printed
    assert str(out.resolve()) in printed
    table = pd.read_csv(out / "metrics.csv", index_col=0)
    assert all(name.startswith("baseline") for name in table.index)
    random_row = table.loc["baseline: random coordinates"]
    assert abs(random_row["spearman"]) < 0.1
    assert (out / "layouts.png").stat().st_size > 10_000
    assert "baseline" in (out / "metrics.md").read_text()
    report = json.loads((out / "encoder.json").read_text())
    assert 0.0 < report["encoder"]["knn_overlap20"] <= 1.0
    assert report["adapter_after"]["domain_accuracy"] < report["adapter_before"]["domain_accuracy"]
