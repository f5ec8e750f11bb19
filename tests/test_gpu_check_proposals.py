"""benchmarks/gpu_check.py's ``proposals`` part (issue #23 item 7): each shipped config's strategy times its
proposals at given observation counts; the part runs once (driver side) and lands in summary.json."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_proposals_part_times_each_configs_strategy(tmp_path, capsys):
    mod = _gpu_check()
    assert mod.main(["--parts", "proposals", "--devices", "cpu,cpu", "--proposal-budget", "10",
                     "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "summary.json").read_text())["proposals"]
    assert len(res) == 1 and res[0]["device"] == "cpu"  # once, whatever the devices
    for name, decisions in (("auxcell_proxy", 16), ("nasfcos_fpn_proxy", 35)):
        r = res[0][name]
        assert r["decisions"] == decisions and r["strategy"] == "SurrogateSearch"
        assert list(r["s_per_proposal"]) == ["10"] and r["s_per_proposal"]["10"] > 0
    assert "proposals auxcell_proxy (16 decisions): " in capsys.readouterr().out
