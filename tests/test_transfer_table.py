"""benchmarks/transfer.py reads the right figure into each column of the transfer tables, from the metric
keys mmseg's DepthMetric, mmpose's CocoMetric / PCKAccuracy(prefix=...) and MpiiPCKAccuracy report."""
from pathlib import Path

import pytest
from _tools import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def transfer():
    return load_script("benchmarks/transfer.py")


def _runs(metric_sets, params=2_000_000):
    return [{"metrics": m, "params": params} for m in metric_sets]


def test_depth_columns_from_depth_metric_keys(transfer):
    keys = ["d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"]
    runs = _runs([{k: float(i) for i, k in enumerate(keys)}, {k: float(i) + 2 for i, k in enumerate(keys)}])
    md, (rec,) = transfer.table("depth", {"m": runs})
    # means of the two seeds (i and i + 2), each column from its own key, never from rmse_log / log10
    assert rec["RMSE lin"] == 6.0 and rec["RMSE log"] == 7.0 and rec["abs rel"] == 4.0 and rec["sq rel"] == 5.0
    assert (rec["δ1"], rec["δ2"], rec["δ3"]) == (1.0, 2.0, 3.0)
    assert "| m | 6.000 ± 1.000 |" in md and md.splitlines()[0].count("|") == 11


def test_keypoint_columns_from_mmpose_metric_keys(transfer):
    proxy = {"coco/AP": 0.3, "coco/AP .5": 0.9, "coco/AR": 0.4, "coco/AR .5": 0.95,
             "pckh@0.5/PCKh": 0.7, "pckh@0.1/PCKh": 0.1}
    _, (rec,) = transfer.table("keypoints", {"m": _runs([proxy])})
    assert (rec["PCKh@0.5"], rec["PCKh@0.1"], rec["AP"], rec["AR"]) == (0.7, 0.1, 0.3, 0.4)
    mpii = {"Head": 0.9, "Shoulder": 0.8, "PCKh": 0.75, "PCKh@0.1": 0.2}  # MpiiPCKAccuracy
    _, (rec,) = transfer.table("keypoints", {"m": _runs([mpii])})
    assert (rec["PCKh@0.5"], rec["PCKh@0.1"]) == (0.75, 0.2) and "AP" not in rec


def test_baseline_width_spec_and_missing_arch(transfer, tmp_path, capsys):
    args = transfer.argparse.Namespace(archs=[], baselines=["heatmap@48", "fcn"])
    assert transfer.models(args) == [("heatmap (48 ch)", ["--baseline", "heatmap", "--width", "48"]),
                                     ("fcn", ["--baseline", "fcn"])]
    assert transfer.main(["--task", "depth", "--archs", str(tmp_path / "nope.json"), "--out", str(tmp_path)]) == 2
    assert "nope.json" in capsys.readouterr().err
