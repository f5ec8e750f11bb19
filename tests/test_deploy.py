"""ONNX deployment (``tools/deploy.py``, ``densenas/onnx_export.py``): for every task one found model and one
baseline, exported by ``tools/export.py`` on a tiny fixture set, built with random (perturbed) weights, exported
by the tool, and then run here in ONNX Runtime at another batch size than the tool's against the PyTorch module;
the metadata and the output names each task promises; refusal of mmcv's compiled ops; bad checkpoints; and a
parity check that catches a wrong graph."""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from _tools import load_script
from _tools import tool as _tool
from torch import nn

from densenas.arch import Arch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

WIDTH = 16
NUM_CLASSES = 3          # segmentation fixture
DET_CLASSES = 2          # proxy COCO fixture
FPN_OPS = ("deform_conv3x3", "sep_conv_3x3", "conv1x1", "skip")  # NAS-FCOS: densenas' DCNv2 must export
NO_WEIGHTS = "model.backbone.backbone.pretrained=False"


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    from densenas.datasets.fixtures import write_voc_fixture

    root = tmp_path_factory.mktemp("voc")
    write_voc_fixture(root, n=6, size=(64, 64), num_classes=NUM_CLASSES)
    return root


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    from densenas.datasets.proxy_det import build_proxy_coco

    root = tmp_path_factory.mktemp("proxy_coco")
    build_proxy_coco(root, num_train=4, num_val=4, size=64, num_classes=DET_CLASSES, seed=0, log=None)
    return root


@pytest.fixture(scope="module")
def nyu(tmp_path_factory) -> Path:
    from densenas.datasets.depth_proxy import build_proxy_nyu

    root = tmp_path_factory.mktemp("proxy_nyu")
    build_proxy_nyu(root, num_train=4, num_test=4, height=48, width=64)
    return root


@pytest.fixture(scope="module")
def kpt(tmp_path_factory) -> Path:
    from densenas.datasets.kpt_proxy import build_proxy_kpt

    root = tmp_path_factory.mktemp("proxy_kpt")
    build_proxy_kpt(root, num_train=4, num_val=4, size=64)
    return root


@pytest.fixture(scope="module")
def bsd(tmp_path_factory) -> Path:
    from densenas.datasets.restore_fixtures import write_bsd_fixture

    root = tmp_path_factory.mktemp("bsd")
    write_bsd_fixture(root, counts={"train": 3, "val": 3}, size=(24, 32), ext="png")
    return root


# ------------------------------------------------------------------------------------- found architectures
def _search_dir(tmp: Path, arch: Arch, config: str) -> Path:
    """A fake search work_dir: the arch JSON next to the dumped search config (as tools/search.py leaves)."""
    d = tmp / "search"
    d.mkdir()
    arch.save(d / "best_arch.json")
    (d / "config.py").write_text(config)
    return d / "best_arch.json"


def _auxcell(tmp: Path) -> Path:
    """A segmentation search's aux-cell decoder (also transferred to depth and keypoints with --task)."""
    from densenas.decoders.auxcell import AuxCellSpace

    arch = AuxCellSpace(num_classes=NUM_CLASSES, width=WIDTH).default_arch()
    return _search_dir(tmp, arch, f"task = dict(type='segmentation')\nspace = dict(type='auxcell', width={WIDTH})\n")


def _nasfcos_fpn_with_dcn(tmp: Path) -> Path:
    """A NAS-FCOS FPN arch with at least one deform_conv3x3 (every FPN cell runs, so the op is in the graph)."""
    from densenas.decoders.nasfcos import NASFCOSSpace

    space = NASFCOSSpace(num_classes=DET_CLASSES, part="fpn", width=WIDTH, fpn_ops=FPN_OPS)
    arch = space.sample(np.random.default_rng(0))
    arch = arch.replace(**{"fpn.cell0.op0": "deform_conv3x3"})
    assert "deform_conv3x3" in dict(arch.choices).values()
    return _search_dir(tmp, arch, "task = dict(type='detection')\n"
                                  f"space = dict(type='nasfcos', part='fpn', width={WIDTH}, fpn_ops={list(FPN_OPS)})\n")


def _nasfpn(tmp: Path) -> Path:
    from densenas.decoders.nasfpn import NASFPNSpace

    arch = NASFPNSpace(out_channels=WIDTH).sample(np.random.default_rng(0))
    return _search_dir(tmp, arch, "task = dict(type='detection', detector='retinanet', stacked_convs=2)\n"
                                  f"space = dict(type='nasfpn', out_channels={WIDTH}, stack=1)\n")


def _irnas(tmp: Path) -> Path:
    from densenas.decoders.irnas import IRNASSpace

    arch = IRNASSpace(width=4, layers=2, blocks=2).sample(np.random.default_rng(0))
    arch = arch.replace(**{"cell.b0.op0": "deform_conv3x3"})
    return _search_dir(tmp, arch, "task = dict(type='restoration', kind='denoise', sigma=25)\n"
                                  "space = dict(type='irnas', width=4, layers=2, blocks=2)\n")


# one found model and one baseline per task (plus a compact segmentation network and a RetinaNet):
# id -> (task, fixture, arch builder or None, tools/export.py arguments)
CASES = {
    "seg_found_auxcell": ("segmentation", "voc", _auxcell, ["--dataset", "voc", "--crop", "64"]),
    "seg_deeplabv3plus": ("segmentation", "voc", None, ["--baseline", "deeplabv3plus", "--dataset", "voc",
                                                       "--crop", "64", "--width", str(WIDTH)]),
    "seg_cgnet": ("segmentation", "voc", None, ["--baseline", "cgnet", "--dataset", "voc", "--crop", "64"]),
    "det_nasfcos_fpn_dcn": ("detection", "coco", _nasfcos_fpn_with_dcn, ["--crop", "64"]),
    "det_fpn_fcos": ("detection", "coco", None, ["--baseline", "fpn_fcos", "--crop", "64", "--width", str(WIDTH)]),
    "det_nasfpn_retinanet": ("detection", "coco", _nasfpn, ["--crop", "64"]),
    "depth_found_auxcell": ("depth", "nyu", _auxcell, ["--task", "depth", "--crop", "48"]),
    "depth_fcn": ("depth", "nyu", None, ["--baseline", "fcn", "--task", "depth", "--crop", "48",
                                         "--width", str(WIDTH)]),
    "kpt_found_auxcell": ("keypoints", "kpt", _auxcell, ["--task", "keypoints", "--crop", "64"]),
    "kpt_heatmap": ("keypoints", "kpt", None, ["--baseline", "heatmap", "--width", str(WIDTH), "--crop", "128"]),
    "rest_irnas": ("restoration", "bsd", _irnas, ["--crop", "16"]),
    # DnCNN with at least the IR-NAS net's parameters (the pairing tools/export.py makes with an arch)
    "rest_dncnn": ("restoration", "bsd", _irnas, ["--baseline", "dncnn", "--crop", "16"]),
}


# ---------------------------------------------------------------------------------------------- helpers
def _export_config(case: str, tmp: Path, data_root: Path) -> Path:
    _, _, arch_fn, args = CASES[case]
    source = [str(arch_fn(tmp))] if arch_fn is not None else []
    out = tmp / f"{case}.py"
    rc = _tool("export")([*source, *args, "--out", str(out), "--data-root", str(data_root), "--iters", "2",
                          "--batch-size", "2", "--workers", "0", "--work-dir", str(tmp / "work")])
    assert rc == 0 and out.is_file()
    return out


def _has_backbone_weights_option(cfg) -> bool:
    bb = cfg.model.get("backbone") or {}
    return isinstance(bb.get("backbone"), dict) and "pretrained" in bb["backbone"]


def _load_config(path: Path):
    from mmengine.config import Config

    cfg = Config.fromfile(str(path))
    if _has_backbone_weights_option(cfg):
        cfg.model.backbone.backbone.pretrained = False  # the checkpoint brings every weight
    return cfg


def _build(cfg) -> nn.Module:
    from mmengine.registry import MODELS, DefaultScope

    import densenas.tasks  # noqa: F401 - the task plugins' mm registrations

    # the scope tools/deploy.py builds under (restoration configs have none; its modules are mmengine's own)
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope") or "mmseg"):
        return MODELS.build(cfg.model).eval()


def _randomize(model: nn.Module, graph: nn.Module, shape: tuple[int, ...] = (3, 64, 64), seed: int = 0) -> None:
    """Give ``model`` weights that make a wrong export visible (``graph`` runs it on images of ``shape``).

    Randomly initialised deep networks (MobileNetV2 without its ImageNet weights) pass almost nothing of
    their input to the deep levels (features off by ~1e-8 between two images), so a graph that ignored the
    image would still match. Every BatchNorm is therefore recalibrated on random images (its running
    statistics set to one training-mode batch's: eval-mode BN is then a non-trivial affine map that keeps
    the signal), its affine parameters are moved off the identity, the DCNv2 offset / mask predictors off
    their zero init (fractional offsets: real bilinear sampling through GridSample), and zero-initialised
    layers (the residual output of DnCNN / IR-NAS, which would make the net the identity) get random weights.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    with torch.no_grad():
        for name, m in model.named_modules():
            if name.endswith("conv_offset") and isinstance(m, nn.Conv2d):
                m.weight.copy_(0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and not m.weight.any():
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in ** 0.5)
        for m in bns:
            if m.affine:
                m.weight.copy_(0.9 + 0.2 * torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=g))
        momentum = [m.momentum for m in bns]
        for m in bns:
            m.momentum = 1.0  # the running statistics become this batch's
        model.train()
        for m in bns:  # also where a backbone keeps its BatchNorm in eval mode while training (norm_eval)
            m.train()
        graph(torch.randn(4, *shape, generator=g))
        model.eval()
        for m, mo in zip(bns, momentum):
            m.momentum = mo


def _expected_outputs(task: str, cfg) -> list[tuple[str, int | None, int | None]]:
    """``(ONNX output name, channels, stride)`` the task promises for this config (``None``: not fixed here)."""
    m = cfg.model
    if task == "segmentation":
        return [("seg_logits", int(m.decode_head.num_classes), None)]
    if task == "depth":
        return [("depth", 1, None)]
    if task == "keypoints":
        return [("heatmaps", int(m.head.out_channels), 4)]
    if task == "restoration":
        return [("restored", int(m.net.get("in_channels", 3)), 1)]
    head = m.bbox_head
    if "FCOS" in head.type:
        strides = [int(s) for s in head.strides]
        return ([(f"cls_score_p{3 + i}", int(head.num_classes), s) for i, s in enumerate(strides)]
                + [(f"bbox_pred_p{3 + i}", 4, s) for i, s in enumerate(strides)]
                + [(f"centerness_p{3 + i}", 1, s) for i, s in enumerate(strides)])
    gen = head.anchor_generator
    strides = [int(s) for s in gen.strides]
    anchors = len(gen.ratios) * int(gen.get("scales_per_octave", 1) or 1) * (len(gen.scales) if gen.get("scales")
                                                                             else 1)
    return ([(f"cls_score_p{3 + i}", anchors * int(head.num_classes), s) for i, s in enumerate(strides)]
            + [(f"bbox_pred_p{3 + i}", anchors * 4, s) for i, s in enumerate(strides)])


def _op_types(path: Path) -> set[str]:
    import onnx

    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    for f in proto.functions:
        ops |= {n.op_type for n in f.node}
    return ops


# ------------------------------------------------------------------------------------ 1. every task, end to end
@pytest.mark.parametrize("case", list(CASES))
def test_deploy_found_and_baseline(case, tmp_path, request, capsys):
    import onnxruntime as ort

    from mmengine.registry import DefaultScope

    from densenas.onnx_export import FlatOutputs, flat_outputs, read_metadata
    from densenas.task import task_of_config

    task_name, fixture, _, _ = CASES[case]
    cfg_path = _export_config(case, tmp_path, request.getfixturevalue(fixture))
    cfg = _load_config(cfg_path)
    task = task_of_config(cfg)
    assert task.name == task_name
    torch.manual_seed(0)  # mm builders initialise from the global generator
    model = _build(cfg)
    graph = task.test_cost_model(model, cfg)[0]
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope") or "mmseg"):  # the test images, as
        real = load_script("tools/deploy.py", "tool_deploy").real_inputs(cfg, model, 3)  # the tool takes them
    _randomize(model, graph, tuple(real.shape[1:]))
    with torch.no_grad():
        scale = max(float(t.abs().max()) for t in flat_outputs(graph(real)))
    if case.endswith("_dcn") or case == "rest_irnas":  # densenas' own DCNv2, not mmcv's
        from densenas.deform import ModulatedDeformConv2d
        assert any(isinstance(m, ModulatedDeformConv2d) for m in model.modules())
    ckpt = tmp_path / "random.pth"
    torch.save({"state_dict": model.state_dict()}, ckpt)

    onnx_path = tmp_path / "out" / f"{case}.onnx"
    # the tool's default check: 1e-4 absolute at unit scale, 1e-4 of each output's range above it (the rule
    # this test applies itself below; an unscaled 1e-4 failed correct graphs whose outputs reach ~30)
    atol = 1e-4 * max(1.0, scale)
    argv = [str(cfg_path), str(ckpt), "--out", str(onnx_path), "--images", "3"]
    if _has_backbone_weights_option(cfg):
        argv += ["--cfg-options", NO_WEIGHTS]
    capsys.readouterr()
    rc = _tool("deploy")(argv)
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert onnx_path.is_file() and onnx_path.stat().st_size > 1000
    assert "onnx.checker: ok" in out and "MISMATCH" not in out

    # metadata: the task, the outputs, pre- and post-processing
    meta = read_metadata(onnx_path)
    assert meta["densenas.task"] == task_name
    assert meta["densenas.postprocess"] == task.deploy_note(cfg) and meta["densenas.postprocess"]
    pre = json.loads(meta["densenas.preprocess"])
    cfg_pre = cfg.model.get("data_preprocessor") or {}
    assert pre.get("type") == cfg_pre.get("type")
    for key in ("mean", "std", "bgr_to_rgb", "rgb_to_bgr"):
        if key in cfg_pre:
            want = cfg_pre[key]
            assert pre[key] == (list(want) if isinstance(want, (list, tuple)) else want), key
    assert pre["input_shape"][0] == "batch" and len(pre["input_shape"]) == 4 and pre["dtype"] == "float32"
    channels, height, width = (int(v) for v in pre["input_shape"][1:])
    expected = _expected_outputs(task_name, cfg)
    names = [n for n, _, _ in expected]
    assert json.loads(meta["densenas.outputs"]) == names

    # the graph: its outputs by name, a symbolic batch, densenas' DCNv2 as GridSample
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == names
    (inp,) = sess.get_inputs()
    assert isinstance(inp.shape[0], str) and list(inp.shape[1:]) == [channels, height, width]
    assert [channels, height, width] == list(real.shape[1:])  # exported at the size of the test images
    if case.endswith("_dcn") or case == "rest_irnas":
        assert "GridSample" in _op_types(onnx_path)

    # ONNX Runtime at batch 2 on random input against the PyTorch module with the very weights saved
    x = torch.randn(2, channels, height, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = [t.numpy() for t in FlatOutputs(graph).eval()(x)]
    got = sess.run(None, {inp.name: x.numpy()})
    assert len(got) == len(ref) == len(names)
    for (name, ch, stride), r, g in zip(expected, ref, got):
        assert g.shape == r.shape, name
        assert g.shape[0] == 2 and (ch is None or g.shape[1] == ch), (name, g.shape)
        if stride is not None:  # names match the tensors: each level at its own stride
            assert g.shape[2:] == (-(-height // stride), -(-width // stride)), (name, g.shape, stride)
        # 1e-4 absolute at unit scale; ONNX Runtime's kernels sum in another order than PyTorch's, so an
        # output of scale 10 (heatmaps, depth in metres) is allowed 1e-4 of that scale
        tol = 1e-4 * max(1.0, float(np.abs(r).max()))
        assert np.abs(g - r).max() <= tol, (name, float(np.abs(g - r).max()), tol)
        assert np.isfinite(g).all(), name
    # the two images give different outputs: the graph depends on its input (not a constant fold)
    assert any(np.abs(g[0] - g[1]).max() > 1e-6 for g in got)
    if got[0].shape == x.shape:  # restoration: not the identity (its residual layer starts at zero)
        assert np.abs(got[0] - x.numpy()).max() > 1e-3


# ------------------------------------------------------------------------------------------- 2. refusal
class _WithNeck(nn.Module):
    def __init__(self, dcn: nn.Module):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.neck = nn.Sequential(OrderedDict(dcn=dcn, act=nn.ReLU()))

    def forward(self, x):
        return self.neck(self.stem(x))


def test_mmcv_deformable_conv_is_refused_by_name(tmp_path):
    pytest.importorskip("mmcv.ops")
    from densenas.deform import modulated_deform_conv
    from densenas.onnx_export import DeployError, check_exportable, export_onnx, unexportable_modules

    model = _WithNeck(modulated_deform_conv(4, 4, backend="mmcv")).eval()
    assert unexportable_modules(model) == [("neck.dcn", "mmcv.ops.modulated_deform_conv.ModulatedDeformConv2dPack")]
    out = tmp_path / "refused.onnx"
    with pytest.raises(DeployError) as e:
        export_onnx(model, torch.randn(1, 3, 8, 8), out)
    msg = str(e.value)
    assert "neck.dcn" in msg and "ModulatedDeformConv2dPack" in msg and "mmcv.ops" in msg
    assert not out.exists()  # refused before anything is written
    with pytest.raises(DeployError, match="neck.dcn"):
        check_exportable(model)

    clean = _WithNeck(modulated_deform_conv(4, 4, backend="auto")).eval()  # densenas' own DCNv2
    assert unexportable_modules(clean) == []
    assert check_exportable(clean) is None
    assert check_exportable(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))) is None


# ------------------------------------------------------------------------------------ 3. bad input (tool)
@pytest.fixture(scope="module")
def dncnn_config(tmp_path_factory, bsd) -> Path:
    tmp = tmp_path_factory.mktemp("dncnn_cfg")
    return _export_config("rest_dncnn", tmp, bsd)


def test_missing_checkpoint_is_named(dncnn_config, tmp_path, capsys):
    missing = tmp_path / "no_such.pth"
    out = tmp_path / "x.onnx"
    assert _tool("deploy")([str(dncnn_config), str(missing), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    assert not out.exists()


def test_missing_config_is_named(tmp_path, capsys):
    ckpt = tmp_path / "c.pth"
    torch.save({"state_dict": {}}, ckpt)
    missing = tmp_path / "no_such_config.py"
    assert _tool("deploy")([str(missing), str(ckpt), "--out", str(tmp_path / "x.onnx")]) == 2
    assert str(missing) in capsys.readouterr().err


def test_mismatched_checkpoint_is_refused(dncnn_config, tmp_path, capsys):
    cfg = _load_config(dncnn_config)
    sd = _build(cfg).state_dict()
    first = next(iter(sd))
    wrong = {k: v for k, v in sd.items() if k != first}       # one weight missing ...
    wrong["net.no_such_layer.weight"] = torch.zeros(3)         # ... one unexpected
    ckpt = tmp_path / "wrong.pth"
    torch.save({"state_dict": wrong}, ckpt)
    out = tmp_path / "x.onnx"
    assert _tool("deploy")([str(dncnn_config), str(ckpt), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "does not match the model" in err
    assert first in err and "net.no_such_layer.weight" in err and "Traceback" not in err
    assert not out.exists()

    # a weight of another shape is named with both shapes
    shaped = dict(sd)
    shaped[first] = torch.zeros(*[s + 1 for s in sd[first].shape])
    torch.save({"state_dict": shaped}, ckpt)
    assert _tool("deploy")([str(dncnn_config), str(ckpt), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert first in err and "another shape" in err and not out.exists()


def test_corrupt_checkpoint_is_refused(dncnn_config, tmp_path, capsys):
    ckpt = tmp_path / "corrupt.pth"
    ckpt.write_bytes(b"not a checkpoint at all")
    assert _tool("deploy")([str(dncnn_config), str(ckpt), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ 4. parity
class _Tiny(nn.Module):
    """Conv -> densenas DCNv2 (GridSample) -> two outputs (a tensor and a dict: flattened in order)."""

    def __init__(self):
        super().__init__()
        from densenas.ops import DeformConvBNReLU

        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dcn = DeformConvBNReLU(8)
        self.cls = nn.Conv2d(8, 2, 1)
        self.reg = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.dcn(self.stem(x))
        return [self.cls(y), {"reg": self.reg(y)}]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    from densenas.onnx_export import export_onnx, ort_session

    torch.manual_seed(0)
    model = _Tiny()
    _randomize(model, model, (3, 16, 16))
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    info = export_onnx(model, torch.randn(2, 3, 16, 16), path, output_names=["cls", "reg"],
                       metadata={"densenas.task": "toy"})
    return model, info, ort_session(path)


def test_parity_ok_for_the_exported_model(tiny_export):
    from densenas.onnx_export import parity, read_metadata

    model, info, sess = tiny_export
    assert info.output_names == ["cls", "reg"] and info.input_shape == (2, 3, 16, 16)
    meta = read_metadata(info.path)
    assert meta["densenas.task"] == "toy" and meta["densenas.opset"] == "20"
    assert "GridSample" in _op_types(info.path)
    for batch in (1, 3):  # the batch is symbolic: other sizes than the export's
        x = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(batch))
        rep = parity(model, sess, x, info.output_names)
        assert rep.ok and rep.batch == batch and set(rep.per_output) == {"cls", "reg"}
        assert rep.max_abs <= 1e-4 and rep.scale > 0


def test_parity_catches_a_different_model(tiny_export):
    import copy

    from densenas.onnx_export import parity

    model, info, sess = tiny_export
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.reg.weight.add_(0.05 * torch.randn(other.reg.weight.shape, generator=torch.Generator().manual_seed(3)))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    rep = parity(other, sess, x, info.output_names)
    assert not rep.ok and rep.max_abs > 1e-3
    assert rep.per_output["reg"] > 1e-3 and rep.per_output["cls"] <= 1e-4  # the difference is where it was made
    # an offset predictor off by a little moves the bilinear samples: caught too
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.dcn[0].conv_offset.bias.add_(0.25)
    assert not parity(moved, sess, x, info.output_names).ok


def test_parity_tolerance_scales_with_the_outputs_range_and_a_fixed_batch_is_refused_clearly(tmp_path):
    """A 1e-5-relative float difference on outputs of ~300 passes (scaled atol), the same absolute difference
    on unit outputs fails; a fixed-batch graph run at another batch raises DeployError, not a traceback."""
    import numpy as np

    from densenas.onnx_export import DeployError, export_onnx, ort_session, parity

    class Scaled(nn.Module):
        def __init__(self, k: float):
            super().__init__()
            self.conv, self.k = nn.Conv2d(3, 2, 1), k

        def forward(self, x):
            return self.conv(x) * self.k

    class Shifted:
        """An ORT session whose outputs are off by ``delta``."""

        def __init__(self, session, delta):
            self.s, self.delta = session, delta

        def get_inputs(self):
            return self.s.get_inputs()

        def run(self, names, feed):
            return [o + np.float32(self.delta) for o in self.s.run(names, feed)]

    x = torch.rand(1, 3, 8, 8) + 1.0
    for k, ok in ((300.0, True), (1.0, False)):
        torch.manual_seed(0)
        m = Scaled(k).eval()
        with torch.no_grad():
            m.conv.weight.abs_()
            m.conv.bias.fill_(1.0)
        path = export_onnx(m, x, tmp_path / f"s{int(k)}.onnx", dynamic_batch=False).path
        rep = parity(m, Shifted(ort_session(path), 3e-3), x, ["output"])
        assert rep.ok is ok and rep.max_abs == pytest.approx(3e-3, rel=0.1)  # float32 spacing at ~700
    with pytest.raises(DeployError, match=r"cannot run an input of shape \(2, 3, 8, 8\)"):
        parity(m, ort_session(path), torch.cat([x, x]), ["output"])
