"""Latency on the deployment runtime (densenas/latency.py) and FBNet's per-op lookup table
(densenas/latency_table.py): what is measured where, the table's units, caching and refusals."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from densenas.latency import measure, providers_for
from densenas.latency_table import LatencyTable, units


class Toy(nn.Module):
    """Two conv blocks (units) around a functional upsample, one block called twice."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.ModuleDict({"a": nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
                                   "b": nn.Sequential(nn.Conv2d(8, 8, 1), nn.Sigmoid())})
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.body["a"](self.body["a"](self.stem(x)))
        return self.out(nn.functional.interpolate(self.body["b"](x), scale_factor=2.0))


def test_units_are_the_smallest_blocks_of_leaves():
    assert [n for n, _ in units(Toy())] == ["stem", "body.a", "body.b", "out"]
    assert [n for n, _ in units(nn.Conv2d(3, 3, 1))] == [""]


def test_measure_on_torch_and_onnxruntime_and_a_refused_runtime():
    m = Toy()
    eager = measure(m, (1, 3, 16, 16), runtime="torch", warmup=1, repeats=2)
    ort = measure(m, (1, 3, 16, 16), runtime="onnxruntime", threads=1, warmup=1, repeats=2)
    assert eager.ms > 0 and eager.provider == "eager cpu" and eager.threads == torch.get_num_threads()
    assert ort.ms > 0 and ort.provider == "CPUExecutionProvider" and ort.threads == 1 and ort.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="runtime must be one of"):
        measure(m, (1, 3, 16, 16), runtime="tflite")
    import onnxruntime as ort_mod

    if not {"TensorrtExecutionProvider", "CUDAExecutionProvider"} & set(ort_mod.get_available_providers()):
        with pytest.raises(RuntimeError, match="needs onnxruntime-gpu"):
            providers_for("tensorrt")


def test_table_measures_each_unit_shape_once_and_refuses_other_settings(tmp_path):
    path = tmp_path / "lut.json"
    logs = []
    table = LatencyTable(path, runtime="onnxruntime", threads=1, warmup=1, repeats=2, log=logs.append)
    calls = table.unit_shapes(Toy(), (1, 3, 16, 16))
    # body.a runs twice at the same shape: one entry, counted twice in the sum
    assert [(n, s) for n, _, s in calls] == [("stem", (1, 3, 16, 16)), ("body.a", (1, 8, 16, 16)),
                                            ("body.a", (1, 8, 16, 16)), ("body.b", (1, 8, 16, 16)),
                                            ("out", (1, 8, 32, 32))]
    est = table.estimate(Toy(), (1, 3, 16, 16))
    assert len(table.entries) == 4 and logs and "4 new op(s)" in logs[0]
    assert est == pytest.approx(sum(table.entries.values()) + table.entries[next(
        k for k in table.entries if "Conv2d(8, 8, kernel_size=(3, 3)" in k)])
    # reopened: nothing measured again; same estimate
    again = LatencyTable(path, runtime="onnxruntime", threads=1, log=logs.append)
    assert again.estimate(Toy(), (1, 3, 16, 16)) == pytest.approx(est) and len(logs) == 1
    # another input size: new entries only for the new shapes
    again.estimate(Toy(), (1, 3, 8, 8))
    assert len(again.entries) == 8
    with pytest.raises(ValueError, match="threads=1.*threads=2"):
        LatencyTable(path, runtime="onnxruntime", threads=2)
    data = json.loads(path.read_text())
    assert data["settings"]["runtime"] == "onnxruntime" and data["settings"]["machine"]
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a latency table"):
        LatencyTable(path)
