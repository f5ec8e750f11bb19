"""benchmarks/bench_deploy.py: its summary against hand-computed Kendall tau and table error, and a tiny run
end to end (two template archs, eager and ONNX Runtime, the reports; the lookup table has its own tests in
test_latency.py and is left out here: it exports every op)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from _tools import load_script

from test_tools import tiny_opts


def test_summary_against_hand_computed_values():
    bench = load_script("benchmarks/bench_deploy.py")
    recs = [dict(model=f"a{i}", eager_ms=e, ort_ms=o, lut_ms=l, baseline=b, metric=None)
            for i, (e, o, l, b) in enumerate([(1, 1, 2, False), (2, 3, 3, False), (3, 2, 3, False), (4, 4, 2, True)])]
    s = bench.summarise(recs, with_lut=True)
    assert s["archs"] == 3
    assert s["tau_eager_ort_archs"] == pytest.approx(1 / 3)  # 3 pairs: 2 concordant, 1 discordant
    assert s["tau_eager_ort_all"] == pytest.approx(4 / 6)  # 6 pairs: 5 concordant, 1 discordant
    # relative errors |lut - ort| / ort: 1, 0, 0.5, 0.5 -> median 0.5; eager / ORT: 1, 2/3, 1.5, 1 -> median 1
    assert s["median_lut_rel_error"] == pytest.approx(0.5) and s["median_eager_over_ort"] == pytest.approx(1.0)


def test_tiny_run_writes_the_table_and_the_plot(tmp_path):
    bench = load_script("benchmarks/bench_deploy.py")
    opts = tiny_opts(tmp_path)[:5] + ["backbone.pretrained=False"]
    out = tmp_path / "bench"
    rc = bench.main(["--config", str(Path(__file__).resolve().parents[1] / "configs/search/template_proxy.py"),
                     "--cfg-options", *opts, "--archs", "2", "--size", "64", "--repeats", "1", "--warmup", "0",
                     "--baselines", "--lut", "none", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "latency.json").read_text())
    assert len(data["models"]) == 2 and all(r["eager_ms"] > 0 and r["ort_ms"] > 0 and r["lut_ms"] is None
                                             for r in data["models"])
    assert data["summary"]["size"] == 64 and (out / "eager_vs_ort.png").is_file()
    assert "Kendall tau eager vs ORT" in (out / "table.md").read_text() and not (out / "lut_onnxruntime.json").exists()
