"""Detection export (NAS-FCOS, Wang et al. CVPR 2020; NAS-FPN, Ghiasi et al. CVPR 2019; FPN + FCOS baseline):
``tools/export.py`` -> ``tools/train.py`` (2 iterations) -> ``tools/test.py`` on a tiny proxy COCO set, and the
found/baseline configs differ only in neck and head."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _tools import tool as _tool

from densenas.arch import Arch

pytest.importorskip("mmdet")
pytest.importorskip("pycocotools")

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 16
CHEAP_FPN_OPS = ("sep_conv_3x3", "conv1x1", "skip")     # no DCN: keeps the CPU runs short
CHEAP_HEAD_OPS = ("gn_conv1x1", "gn_conv3x3", "skip")


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    from densenas.datasets.proxy_det import build_proxy_coco

    root = tmp_path_factory.mktemp("proxy_coco")
    build_proxy_coco(root, num_train=8, num_val=4, size=64, num_classes=2, seed=0, log=None)
    return root


def _search_dir(tmp: Path, arch: Arch, space: str, task: str = "dict(type='detection')") -> Path:
    """A fake search work_dir: the arch JSON next to the dumped search config (as tools/search.py leaves)."""
    d = tmp / "search"
    d.mkdir()
    arch.save(d / "best_arch.json")
    (d / "config.py").write_text(f"task = {task}\nspace = {space}\n")
    return d / "best_arch.json"


def _nasfcos_fpn_arch(tmp: Path) -> Path:
    from densenas.decoders.nasfcos import NASFCOSSpace

    space = NASFCOSSpace(num_classes=2, part="fpn", width=WIDTH, fpn_ops=CHEAP_FPN_OPS)
    arch = space.sample(np.random.default_rng(0))
    return _search_dir(tmp, arch, f"dict(type='nasfcos', part='fpn', width={WIDTH}, "
                                  f"fpn_ops={list(CHEAP_FPN_OPS)})")


def _nasfcos_head_arch(tmp: Path) -> Path:
    from densenas.decoders.nasfcos import NASFCOSSpace

    fpn = NASFCOSSpace(num_classes=2, part="fpn", width=WIDTH, fpn_ops=CHEAP_FPN_OPS)
    fixed = tmp / "fixed_fpn.json"
    fpn.sample(np.random.default_rng(1)).save(fixed)
    space = NASFCOSSpace(num_classes=2, part="head", width=WIDTH, head_ops=CHEAP_HEAD_OPS, fixed_fpn=str(fixed))
    arch = space.sample(np.random.default_rng(2))
    return _search_dir(tmp, arch, f"dict(type='nasfcos', part='head', width={WIDTH}, "
                                  f"head_ops={list(CHEAP_HEAD_OPS)}, fixed_fpn={str(fixed)!r})")


def _nasfpn_arch(tmp: Path) -> Path:
    from densenas.decoders.nasfpn import NASFPNSpace

    arch = NASFPNSpace(out_channels=WIDTH).sample(np.random.default_rng(0))
    return _search_dir(tmp, arch, f"dict(type='nasfpn', out_channels={WIDTH}, stack=1)",
                       task="dict(type='detection', detector='retinanet', stacked_convs=2)")


def _export(tmp: Path, coco_root: Path, *source: str, out: str = "det.py", extra: tuple[str, ...] = ()) -> Path:
    cfg = tmp / out
    rc = _tool("export")([*source, "--out", str(cfg), "--data-root", str(coco_root), "--crop", "64",
                          "--iters", "2", "--batch-size", "2", "--workers", "0",
                          "--work-dir", str(tmp / "work"), *extra])
    assert rc == 0 and cfg.is_file()
    return cfg


@pytest.mark.parametrize("kind", ["nasfpn", "nasfcos_fpn", "nasfcos_head", "fpn_fcos"])
def test_export_train_test(kind, tmp_path, coco_root):
    """Export, train 2 iterations, evaluate: COCO AP from CocoMetric, parameters and MAdds are reported."""
    from mmengine.config import Config

    if kind == "fpn_fcos":
        cfg_path = _export(tmp_path, coco_root, "--baseline", "fpn_fcos", extra=("--width", str(WIDTH)))
    else:
        arch_path = {"nasfpn": _nasfpn_arch, "nasfcos_fpn": _nasfcos_fpn_arch,
                     "nasfcos_head": _nasfcos_head_arch}[kind](tmp_path)
        cfg_path = _export(tmp_path, coco_root, str(arch_path))
    cfg = Config.fromfile(str(cfg_path))
    assert cfg.default_scope == "mmdet" and cfg.val_evaluator.type == "CocoMetric"
    assert cfg.model.backbone == dict(type="DenseNASBackbone",
                                      backbone=dict(type="mobilenet_v2", out_indices=(6, 13, 17), pretrained=True))
    neck = {"nasfpn": "NASFPNSearchedNeck", "fpn_fcos": "FPN"}.get(kind, "NASFCOSSearchedFPN")
    assert cfg.model.neck.type == neck and cfg.model.neck.out_channels == WIDTH  # the search's width
    if kind == "nasfcos_head":  # the fixed FPN the head was searched with travels inside the config
        fixed = Arch.load(tmp_path / "fixed_fpn.json")
        assert Arch.from_dict(cfg.model.neck.arch).as_dict() == fixed.as_dict()
        assert Arch.from_dict(cfg.model.bbox_head.arch).as_dict() == Arch.load(arch_path).as_dict()
    if kind == "nasfcos_fpn":  # an FPN-search arch is trained with the plain FCOS head it was searched with
        from densenas.decoders.nasfcos import plain_head_arch
        assert Arch.from_dict(cfg.model.bbox_head.arch).as_dict() == plain_head_arch().as_dict()

    # untrained heads score ~0.01 (focal prior): keep every box so CocoMetric has detections to rate
    opts = ["model.backbone.backbone.pretrained=False", "model.test_cfg.score_thr=0.0"]
    work = tmp_path / "work"
    assert _tool("train")([str(cfg_path), "--work-dir", str(work), "--cfg-options", *opts]) == 0
    ckpt = work / "iter_2.pth"
    assert ckpt.is_file()
    out = tmp_path / "test.json"
    assert _tool("test")([str(cfg_path), str(ckpt), "--work-dir", str(tmp_path / "test"),
                          "--json", str(out), "--cfg-options", *opts]) == 0
    res = json.loads(out.read_text())
    assert "coco/bbox_mAP" in res["metrics"] and "coco/bbox_mAP_50" in res["metrics"]
    assert -1.0 <= res["metrics"]["coco/bbox_mAP"] <= 1.0
    assert res["params"] > 1_800_000  # the whole detector: MobileNetV2 to block 17 (~1.8 M) + neck + head
    div = cfg.model.data_preprocessor.pad_size_divisor
    assert res["input_size"] == [max(64, div)] * 2
    assert res["madds"] > 10_000_000


def test_no_detections_is_explained(tmp_path, coco_root, capsys):
    """CocoMetric returns no metrics when nothing is detected: train and test say why instead of just "{}"."""
    cfg_path = _export(tmp_path, coco_root, "--baseline", "fpn_fcos", extra=("--width", str(WIDTH)))
    opts = ["model.backbone.backbone.pretrained=False", "model.test_cfg.score_thr=1.01"]  # no score passes
    work = tmp_path / "work"
    assert _tool("train")([str(cfg_path), "--work-dir", str(work), "--cfg-options", *opts]) == 0
    assert "the val metric returned nothing" in capsys.readouterr().out
    assert _tool("test")([str(cfg_path), str(work / "iter_2.pth"), "--work-dir", str(tmp_path / "test"),
                          "--cfg-options", *opts]) == 0
    assert "the test metric returned nothing" in capsys.readouterr().out


def test_baseline_and_found_share_data_schedule_backbone(tmp_path, coco_root):
    """``--baseline fpn_fcos`` and a NAS-FCOS arch of the same width: only neck and head differ."""
    from mmengine.config import Config

    arch_path = _nasfcos_fpn_arch(tmp_path)
    found = Config.fromfile(str(_export(tmp_path, coco_root, str(arch_path), out="found.py")))
    base = Config.fromfile(str(_export(tmp_path, coco_root, "--baseline", "fpn_fcos", out="base.py",
                                       extra=("--width", str(WIDTH)))))
    differ = {k for k in set(found) | set(base) if found.get(k) != base.get(k)}
    assert differ <= {"model", "custom_imports"}, differ
    fm, bm = found.model.to_dict(), base.model.to_dict()
    assert {k for k in set(fm) | set(bm) if fm.get(k) != bm.get(k)} == {"neck", "bbox_head"}
    assert fm["neck"]["out_channels"] == bm["neck"]["out_channels"] == WIDTH
    assert fm["bbox_head"]["feat_channels"] == bm["bbox_head"]["feat_channels"] == WIDTH
    assert bm["neck"]["type"] == "FPN" and bm["bbox_head"]["type"] == "FCOSHead"
    for k in ("loss_cls", "loss_bbox", "loss_centerness", "strides", "num_classes"):
        assert fm["bbox_head"][k] == bm["bbox_head"][k], k


def test_bad_detection_exports_fail_clearly(tmp_path, coco_root, capsys):
    """A NAS-FCOS arch with a value outside its search space, and a missing dataset, are named."""
    arch_path = _nasfcos_fpn_arch(tmp_path)
    arch = Arch.load(arch_path)
    name = next(n for n, _ in arch.choices if n.endswith(".op0"))
    arch.replace(**{name: "no_such_op"}).save(arch_path)
    rc = _tool("export")([str(arch_path), "--out", str(tmp_path / "x.py"), "--data-root", str(coco_root)])
    assert rc == 2 and name in capsys.readouterr().err
    rc = _tool("export")(["--baseline", "fpn_fcos", "--out", str(tmp_path / "y.py"),
                          "--data-root", str(tmp_path / "nowhere")])
    assert rc == 2 and "instances_train.json" in capsys.readouterr().err


def test_voc_layout_retinanet_baseline_export_train_test(tmp_path):
    """A VOC-layout dataset and the FPN + RetinaNet baseline: mmdet's VOCDataset, VOCMetric's mAP."""
    from mmengine.config import Config

    from densenas.datasets.det_fixtures import write_voc_det_fixture

    voc = tmp_path / "voc"
    write_voc_det_fixture(voc, n=6, size=(48, 64), num_classes=3)
    cfg_path = _export(tmp_path, voc, "--baseline", "fpn_retinanet",
                       extra=("--layout", "voc", "--width", str(WIDTH)))
    cfg = Config.fromfile(str(cfg_path))
    assert cfg.val_evaluator.type == "VOCMetric" and cfg.val_dataloader.dataset.type == "VOCDataset"
    assert cfg.model.bbox_head.type == "RetinaHead" and cfg.model.bbox_head.num_classes == 20  # VOC classes
    opts = ["model.backbone.backbone.pretrained=False", "model.test_cfg.score_thr=0.0"]
    work = tmp_path / "work"
    assert _tool("train")([str(cfg_path), "--work-dir", str(work), "--cfg-options", *opts]) == 0
    out = tmp_path / "test.json"
    assert _tool("test")([str(cfg_path), str(work / "iter_2.pth"), "--work-dir", str(tmp_path / "test"),
                          "--json", str(out), "--cfg-options", *opts]) == 0
    res = json.loads(out.read_text())
    assert 0.0 <= res["metrics"]["pascal_voc/mAP"] <= 1.0 and res["params"] > 1_800_000
