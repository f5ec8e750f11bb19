"""Optional int8 deployment (``tools/deploy.py --int8``, ``densenas/quantize.py``): ONNX Runtime static
quantisation (QDQ) of a tiny exported segmentation model calibrated on its train split, the checked int8 file,
its outputs against fp32, the metric table (PyTorch / fp32 ORT / int8 ORT) on the val split, the ORT stand-in
that the metric is computed from, and the refusals (bad ``--calib-images``, nothing to quantise)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from _tools import load_script
from _tools import tool as _tool

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

NUM_CLASSES = 3
N_IMAGES = 12            # the VOC fixture: the first half is train, the second val
CALIB = 4


# ----------------------------------------------------------------------------------------------- fixtures
def _config_text(root: Path) -> str:
    """A tiny mmseg segmentor (2-stage ResNet-18 at 8 channels + FCN head: exports in seconds) on ``root``."""
    return f'''
default_scope = "mmseg"
norm_cfg = dict(type="BN", requires_grad=True)
model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size_divisor=32),
    backbone=dict(type="ResNet", depth=18, base_channels=8, num_stages=2, strides=(1, 2), dilations=(1, 1),
                  out_indices=(1,), norm_cfg=norm_cfg),
    decode_head=dict(type="FCNHead", in_channels=16, in_index=0, channels=16, num_convs=1, concat_input=False,
                     num_classes={NUM_CLASSES}, norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode="whole"))
dataset = dict(type="BaseSegDataset", data_root="{root}", img_suffix=".jpg", seg_map_suffix=".png",
               metainfo=dict(classes=["a", "b", "c"], palette=[[0, 0, 0], [128, 0, 0], [0, 128, 0]]),
               data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"))
train_pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                  dict(type="RandomResize", scale=(64, 64), ratio_range=(0.5, 2.0), keep_ratio=True),
                  dict(type="RandomCrop", crop_size=(32, 32)), dict(type="RandomFlip", prob=0.5),
                  dict(type="PackSegInputs")]
test_pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
train_dataloader = dict(batch_size=2, num_workers=0, sampler=dict(type="InfiniteSampler", shuffle=True),
                        dataset=dict(dataset, ann_file="ImageSets/Segmentation/train.txt", pipeline=train_pipeline))
test_dataloader = dict(batch_size=1, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=False),
                       dataset=dict(dataset, ann_file="ImageSets/Segmentation/val.txt", pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
val_evaluator = test_evaluator
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """The VOC fixture, the config, a checkpoint of weights that pass the image on (BN recalibrated: see
    tests/test_deploy.py) and one ``tools/deploy.py --int8`` run whose output the tests read."""
    from densenas.datasets.fixtures import write_voc_fixture
    from mmengine.config import Config
    from test_deploy import _build, _randomize

    tmp = tmp_path_factory.mktemp("int8")
    fixture = write_voc_fixture(tmp / "voc", n=N_IMAGES, size=(64, 64), num_classes=NUM_CLASSES)
    cfg_path = tmp / "tiny_seg.py"
    cfg_path.write_text(_config_text(tmp / "voc"))
    cfg = Config.fromfile(str(cfg_path))
    torch.manual_seed(0)
    model = _build(cfg)
    from densenas.task import task_of_config

    graph = task_of_config(cfg).test_cost_model(model, cfg)[0]
    _randomize(model, graph, (3, 64, 64))
    ckpt = tmp / "tiny.pth"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    out = tmp / "out" / "tiny.onnx"
    return dict(tmp=tmp, splits=fixture["splits"], cfg_path=cfg_path, cfg=cfg, model=model, graph=graph,
                ckpt=ckpt, out=out, int8=out.with_suffix(".int8.onnx"))


@pytest.fixture(scope="module")
def deployed(setup) -> dict:
    """``tools/deploy.py ... --int8 --calib-images 4`` run once (its exit status and printed lines)."""
    import contextlib
    import io

    buf_out, buf_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        rc = _tool("deploy")([str(setup["cfg_path"]), str(setup["ckpt"]), "--out", str(setup["out"]), "--images", "3",
                              "--int8", "--calib-images", str(CALIB), "--latency-repeats", "5"])
    return dict(rc=rc, out=buf_out.getvalue(), err=buf_err.getvalue())


def _real_inputs(setup, n: int = 6) -> torch.Tensor:
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmseg"):
        return load_script("tools/deploy.py", "tool_deploy").real_inputs(setup["cfg"], setup["model"], n)


# ---------------------------------------------------------------------------------------------- the file
def test_int8_file_is_written_checked_and_quantised(setup, deployed):
    import onnx

    from densenas.onnx_export import read_metadata

    assert deployed["rc"] == 0, deployed["out"] + deployed["err"]
    fp32, int8 = setup["out"], setup["int8"]
    assert fp32.is_file() and int8.is_file()
    onnx.checker.check_model(str(int8), full_check=True)
    proto = onnx.load(str(int8))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") >= 5 and ops.count("DequantizeLinear") >= 10
    # every Conv's weight is an int8 initializer behind a DequantizeLinear (per channel: one scale per filter)
    init = {t.name: t for t in proto.graph.initializer}
    dq = {n.output[0]: n for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        w = dq[conv.input[1]]
        q = init[w.input[0]]
        assert q.data_type == onnx.TensorProto.INT8, conv.name
        assert len(init[w.input[1]].dims) == 1 and init[w.input[1]].dims[0] == q.dims[0] > 1, conv.name
    # activations: uint8 (the default, ORT's x86 kernels are uint8 x int8)
    q_act = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert all(init[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in q_act if n.input[2] in init)
    assert int8.stat().st_size < 0.7 * fp32.stat().st_size  # 8-bit weights (measured 0.56x on this tiny model)
    meta = read_metadata(int8)
    assert meta["densenas.task"] == "segmentation" and "densenas.preprocess" in meta  # fp32 metadata kept
    quant = json.loads(meta["densenas.quantization"])
    assert quant["format"] == "QDQ" and quant["calibrate_method"] == "minmax" and quant["per_channel"]
    assert quant["activation_type"] == "QUInt8" and quant["weight_type"] == "QInt8"
    assert quant["calibration_images"] == CALIB and len(quant["calibration_files"]) == CALIB


def test_int8_outputs_are_close_to_fp32(setup, deployed):
    from densenas.onnx_export import ort_session

    assert deployed["rc"] == 0
    x = _real_inputs(setup).numpy()  # val images, never seen by the calibration
    fp32 = ort_session(setup["out"]).run(None, {"input": x})[0]
    int8 = ort_session(setup["int8"]).run(None, {"input": x})[0]
    assert int8.shape == fp32.shape and np.isfinite(int8).all()
    scale = float(np.abs(fp32).max())
    err = np.abs(int8 - fp32)
    # measured on this model (6 val images): largest error 6.0 % of the logits' range, mean 0.9 %, class decisions
    # 97 % the same; the bounds are 2.5-3x that, so a wrong scale / zero point shows, and fp32 left as is fails
    # the lower bound
    assert err.max() <= 0.15 * scale, (float(err.max()), scale)
    assert err.mean() <= 0.03 * scale, (float(err.mean()), scale)
    assert err.max() > 1e-4 * scale  # really quantised: not the fp32 graph again
    # the class decisions mostly agree
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.85


# ------------------------------------------------------------------------------------------ calibration
def _ids(paths) -> set[str]:
    return {Path(p).stem for p in paths}


def test_calibration_draws_from_the_train_split_not_the_test_split(setup, deployed):
    from mmengine.registry import DefaultScope

    from densenas.onnx_export import read_metadata
    from densenas.quantize import calibration_reader, calibration_set

    train, val = set(setup["splits"]["train"]), set(setup["splits"]["val"])
    assert train and val and not train & val
    with DefaultScope.overwrite_default_scope("mmseg"):
        calib = calibration_set(setup["cfg"], setup["model"], CALIB, (3, 64, 64))
    assert len(calib.inputs) == len(calib.paths) == CALIB and calib.size == len(train)
    assert _ids(calib.paths) <= train and not _ids(calib.paths) & val, calib.paths
    assert all(Path(p).parent.name == "JPEGImages" for p in calib.paths)
    assert "train.txt" in calib.split
    # the images as the model's data preprocessor gives them (normalised, not raw bytes), one per batch
    x = np.concatenate(calib.inputs)
    assert x.shape == (CALIB, 3, 64, 64) and x.dtype == np.float32 and abs(float(x.mean())) < 3 and x.min() < 0
    reader = calibration_reader(calib)
    feeds = [reader.get_next() for _ in range(CALIB + 1)]
    assert feeds[-1] is None and all(list(f) == ["input"] and f["input"].shape == (1, 3, 64, 64) for f in feeds[:-1])
    reader.rewind()
    assert np.array_equal(reader.get_next()["input"], feeds[0]["input"])
    # the file the tool wrote names the same kind of files: train images only
    assert deployed["rc"] == 0
    files = json.loads(read_metadata(setup["int8"])["densenas.quantization"])["calibration_files"]
    assert _ids(files) <= train and not _ids(files) & val
    assert "of the train split" in deployed["out"] and "train.txt" in deployed["out"]


# ------------------------------------------------------------------------------------------------ table
def test_metric_table_has_the_three_metrics_the_drop_sizes_and_latency(setup, deployed):
    out = deployed["out"]
    assert deployed["rc"] == 0, out + deployed["err"]
    rows = {}
    for name in ("fp32 PyTorch", "fp32 ONNX Runtime", "int8 ONNX Runtime"):
        m = re.search(rf"^\| {name} \| ([-0-9.e+]+) \| ([^|]+) \| ([^|]+) \|$", out, re.M)
        assert m, (name, out)
        rows[name] = (float(m.group(1)), m.group(2).strip(), m.group(3).strip())
    assert re.search(r"^\| model \| mIoU \| file \| ORT CPU latency \(1 thread\) \|$", out, re.M), out
    assert rows["fp32 ONNX Runtime"][1].endswith("MiB") and rows["int8 ONNX Runtime"][2].endswith("ms")
    # fp32 ORT is PyTorch (outputs agree to 1e-5): the same mIoU; the drop printed is fp32 ORT - int8 ORT
    assert rows["fp32 ONNX Runtime"][0] == pytest.approx(rows["fp32 PyTorch"][0], abs=0.01)
    m = re.search(r"^drop \(mIoU, higher is better; fp32 ORT -> int8 ORT\): ([-+0-9.e]+)", out, re.M)
    assert m, out
    assert float(m.group(1)) == pytest.approx(rows["fp32 ONNX Runtime"][0] - rows["int8 ONNX Runtime"][0], abs=0.01)
    assert f"on the test split (IoUMetric, {len(setup['splits']['val'])} samples)" in out
    assert re.search(r"latency \(ONNX Runtime CPU, 1 intra-op thread, batch 1, median of 5 runs after 5 warm-up, "
                     r"fp32 and int8 runs interleaved\): fp32 [0-9.]+ ms, int8 [0-9.]+ ms, int8 / fp32 = [0-9.]+x",
                     out), out
    metrics = json.loads(out.split("all metrics: ", 1)[1].splitlines()[0])
    assert set(metrics) == {"torch", "fp32", "int8"} and all("mIoU" in v for v in metrics.values())


def test_the_metric_is_computed_from_onnx_runtime_outputs(setup, deployed):
    """A session whose class maps are rolled by one class gives other predictions: its metric must differ
    from PyTorch's while the fp32 session's equals it (the stand-in really feeds ORT's outputs to mmseg)."""
    from mmengine.registry import DefaultScope

    from densenas.onnx_export import ort_session
    from densenas.quantize_eval import evaluate_variants

    class Rolled:
        def __init__(self, s):
            self.s = s

        def get_inputs(self):
            return self.s.get_inputs()

        def run(self, names, feed):
            return [np.roll(o, 1, axis=1) for o in self.s.run(names, feed)]

    assert deployed["rc"] == 0
    fp32 = ort_session(setup["out"])
    with DefaultScope.overwrite_default_scope("mmseg"):
        rep = evaluate_variants(setup["cfg"], setup["model"], setup["graph"], {"fp32": fp32, "rolled": Rolled(fp32)},
                                (3, 64, 64), metric=(r"(^|/)miou$", True), max_images=3)
    assert rep.evaluated == 3 and rep.headline == "mIoU"
    torch_m, fp32_m, rolled_m = (rep.variants[k].metrics for k in ("torch", "fp32", "rolled"))
    assert fp32_m["aAcc"] == pytest.approx(torch_m["aAcc"], abs=1e-6)
    assert rolled_m["aAcc"] != pytest.approx(torch_m["aAcc"], abs=1e-3)
    assert rep.output_diff["fp32"]["max_abs"] < 1e-3 < rep.output_diff["rolled"]["max_abs"]


# ---------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("n", [0, N_IMAGES])
def test_bad_calib_images_is_refused_before_anything_is_written(setup, tmp_path, capsys, n):
    out = tmp_path / "bad.onnx"
    rc = _tool("deploy")([str(setup["cfg_path"]), str(setup["ckpt"]), "--out", str(out), "--int8",
                          "--calib-images", str(n)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    if n == 0:
        assert "--calib-images must be >= 1" in err
    else:  # more than the train split holds (6 of the 12 fixture images)
        assert f"--calib-images {n}: the train split" in err and "has only 6 samples" in err and "train.txt" in err
    assert not out.exists() and not out.with_suffix(".int8.onnx").exists()


def test_quantisation_refuses_a_graph_with_nothing_to_quantise_and_unknown_settings(setup, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from densenas.quantize import CalibrationSet, QuantizeError, quantize_model

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Sigmoid", ["input"], ["output"])], "no_weights", [x], [y])
    path = tmp_path / "sigmoid.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    calib = CalibrationSet(inputs=[np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)],
                           paths=["a.jpg"], split="toy", size=1)
    with pytest.raises(QuantizeError, match="quantised no weight"):
        quantize_model(path, tmp_path / "sigmoid.int8.onnx", calib)
    assert not (tmp_path / "sigmoid.int8.onnx").exists()
    with pytest.raises(QuantizeError, match="calibration method 'kl'"):
        quantize_model(setup["out"], tmp_path / "x.onnx", calib, method="kl")
    with pytest.raises(QuantizeError, match="overwrite the fp32 file"):
        quantize_model(path, path, calib)


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_other_calibration_methods_give_other_scales(setup, deployed, tmp_path, method, monkeypatch):
    """``--calib-method``: another method than MinMax gives other activation ranges (other scales in the file).
    Entropy through ``quantize_static`` alone would not (its 128-bin histogram leaves only the whole range)."""
    import onnx
    from mmengine.registry import DefaultScope

    import densenas.quantize
    from densenas.quantize import calibration_set, quantize_model

    monkeypatch.setattr(densenas.quantize, "ENTROPY_BINS", (512, 128))  # the tool's 2048 bins: 5x slower here
    assert deployed["rc"] == 0
    with DefaultScope.overwrite_default_scope("mmseg"):
        calib = calibration_set(setup["cfg"], setup["model"], CALIB, (3, 64, 64))
    info = quantize_model(setup["out"], tmp_path / "p.onnx", calib, method=method)
    assert info.method == method and info.quantized_ops.get("Conv", 0) >= 5

    def act_scales(path):
        proto = onnx.load(str(path))
        init = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
        return sorted(float(init[n.input[1]]) for n in proto.graph.node
                      if n.op_type == "QuantizeLinear" and init[n.input[1]].ndim == 0)

    a, b = act_scales(setup["int8"]), act_scales(info.path)
    assert len(a) == len(b) > 0
    assert sum(x != y for x, y in zip(a, b)) >= len(a) // 3, (a, b)  # most ranges differ, not one by chance


def test_vnni_is_read_from_the_cpu_flags(tmp_path):
    """7-bit weights (reduce_range) only where the CPU lacks VNNI: AVX2's VPMADDUBSW saturates with 8-bit ones."""
    from densenas.quantize import cpu_has_vnni

    (tmp_path / "vnni").write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    (tmp_path / "avx2").write_text("flags\t\t: fpu sse2 avx2 fma\n")
    assert cpu_has_vnni(tmp_path / "vnni") and not cpu_has_vnni(tmp_path / "avx2")
    assert not cpu_has_vnni(tmp_path / "missing")


def test_the_int8_file_records_its_weight_range(setup, deployed):
    import json

    import onnx

    from densenas.quantize import QUANT_META, cpu_has_vnni

    meta = {p.key: p.value for p in onnx.load(str(setup["int8"])).metadata_props}
    assert json.loads(meta[QUANT_META])["reduce_range"] is (not cpu_has_vnni())


def test_the_weight_range_can_be_set_for_another_target_cpu(setup, tmp_path, capsys):
    """``--int8-reduce-range on|off`` overrides this CPU's choice (a model quantised here for a VNNI server, or
    for an AVX2 board): the metadata records it and the int8 weights use 7 or 8 bits."""
    import json

    import onnx
    from onnx import numpy_helper

    from densenas.quantize import QUANT_META, cpu_has_vnni

    choice = "off" if not cpu_has_vnni() else "on"  # the opposite of what auto picks here
    out = tmp_path / "rr.onnx"
    rc = _tool("deploy")([str(setup["cfg_path"]), str(setup["ckpt"]), "--out", str(out), "--images", "1", "--int8",
                          "--calib-images", str(CALIB), "--int8-reduce-range", choice, "--eval-images", "1",
                          "--latency-repeats", "1"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    proto = onnx.load(str(out.with_suffix(".int8.onnx")))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[QUANT_META])["reduce_range"] is (choice == "on")
    assert ("(7-bit, reduce_range)" in printed) is (choice == "on")
    assert ("understate the file on a VNNI target" in printed) is (choice == "off")
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    weights = [init[n.input[0]] for n in proto.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in init and init[n.input[0]].dtype == np.int8]
    peak = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert (peak <= 64) is (choice == "on"), peak  # symmetric 7-bit weights stay within [-64, 64]
