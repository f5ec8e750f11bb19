"""The user's own data end to end (issue #24 item 6).

Segmentation: ``tools/export.py`` takes the classes of a VOC-layout set from its label masks (or ``--classes``)
for every baseline and for an arch found on another set, never the fixed 21 VOC classes; the written config
builds and mmseg's dataset reads the set with those classes. Detection: a hand-made COCO file without ``info``
(pycocotools 2.0.9 / 2.0.10: ``KeyError: 'info'`` in ``COCO.loadRes``) or without ``iscrowd`` (every
``COCOeval``) is fine-tuned and evaluated by ``tools/train.py`` to COCO bbox mAP numbers.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
from _tools import tool as _tool
from PIL import Image

SEG_BASELINES = ("aspp", "deeplabv3plus", "fcn", "lraspp", "cgnet", "fastscnn", "erfnet")


def _voc_palette() -> list[int]:
    from densenas.datasets.proxy import voc_palette

    return voc_palette()


def write_voc_set(root: Path, labels_per_image: list[tuple[int, ...]], n_train: int, size: int = 32) -> Path:
    """A VOC-layout segmentation set: image ``i`` holds vertical stripes of ``labels_per_image[i]`` (palette
    PNG masks, a one-pixel 255 border); the first ``n_train`` ids are train, the rest val."""
    rng = np.random.default_rng(0)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"img_{i:03d}" for i in range(len(labels_per_image))]
    for name, labels in zip(ids, labels_per_image):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        mask = np.zeros((size, size), np.uint8)
        for k, lab in enumerate(labels):
            mask[:, k * size // len(labels):] = lab
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 255
        im = Image.fromarray(mask, mode="P")
        im.putpalette(_voc_palette())
        im.save(root / "SegmentationClass" / f"{name}.png")
    lists = root / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in ids[:n_train]))
    (lists / "val.txt").write_text("".join(f"{i}\n" for i in ids[n_train:]))
    return root


@pytest.fixture(scope="module")
def voc3(tmp_path_factory) -> Path:
    """3 classes (0 background, 1, 2); class 2 only in a val mask."""
    return write_voc_set(tmp_path_factory.mktemp("voc3"), [(0, 1), (1, 0), (0, 1, 0), (0, 2)], n_train=3)


def _export(tmp: Path, *argv: str, out: str = "x.py") -> Path:
    cfg = tmp / out
    rc = _tool("export")(["--out", str(cfg), "--crop", "64", "--iters", "2", "--batch-size", "2", "--workers", "0",
                          "--work-dir", str(tmp / "work"), *argv])  # argv last: it may override these
    assert rc == 0 and cfg.is_file()
    return cfg


def _seg_datasets(cfg) -> list:
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    return [DATASETS.build(cfg[f"{s}_dataloader"].dataset) for s in ("train", "val")]


@pytest.mark.parametrize("baseline", SEG_BASELINES)
def test_voc_baselines_take_their_classes_from_the_masks(baseline, voc3, tmp_path, capsys):
    """Every segmentation baseline on a 3-class VOC-layout set: 3 classes (not VOC's 21) in the head and in the
    dataset metainfo, said with the number of masks read; mmseg's dataset loads both splits with them."""
    from mmengine.config import Config

    crop = ("--crop", "1600") if baseline == "lraspp" else ()  # LRASPPHead's 49x49 pooling needs big inputs
    cfg_path = _export(tmp_path, "--baseline", baseline, "--dataset", "voc", "--data-root", str(voc3), *crop)
    out = capsys.readouterr().out
    assert "3 classes from the data: labels [0, 1, 2]" in out and "in 4 masks of" in out
    cfg = Config.fromfile(str(cfg_path))
    assert cfg.model.decode_head.num_classes == 3
    for split in ("train", "val"):
        meta = cfg[f"{split}_dataloader"].dataset.metainfo
        assert meta.classes == ["background", "aeroplane", "bicycle"] and len(meta.palette) == 3
    train, val = _seg_datasets(cfg)
    assert (len(train), len(val)) == (3, 1)
    assert list(train.metainfo["classes"]) == ["background", "aeroplane", "bicycle"]
    sample = val[0]["data_samples"]
    assert set(np.unique(sample.gt_sem_seg.data.numpy()).tolist()) <= {0, 2, 255}


def test_exported_head_predicts_the_data_classes(voc3, tmp_path):
    """The written DeepLabV3+ config builds (mmseg registry) into a model with 3 output channels."""
    import torch
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import densenas.tasks.segmentation.mm  # noqa: F401  (the config's custom_imports)

    cfg = Config.fromfile(str(_export(tmp_path, "--baseline", "deeplabv3plus", "--dataset", "voc",
                                      "--data-root", str(voc3), "--width", "16")))
    register_all_modules(init_default_scope=True)
    cfg.model.backbone.backbone.pretrained = False
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        assert model._forward(torch.zeros(1, 3, 64, 64)).shape[:2] == (1, 3)


def test_classes_option_count_and_names(voc3, tmp_path, capsys):
    """``--classes 4`` sets the count (without reading masks); ``--classes a,b,c`` names the classes in the
    dataset metainfo, which mmseg's dataset then reports; bad lists are refused by name."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(_export(tmp_path, "--baseline", "fcn", "--dataset", "voc", "--data-root", str(voc3),
                                      "--classes", "4", out="four.py")))
    assert "from the data" not in capsys.readouterr().out
    assert cfg.model.decode_head.num_classes == 4 and len(cfg.train_dataloader.dataset.metainfo.classes) == 4

    cfg = Config.fromfile(str(_export(tmp_path, "--baseline", "fcn", "--dataset", "voc", "--data-root", str(voc3),
                                      "--classes", "sky, road ,car", out="named.py")))
    assert cfg.model.decode_head.num_classes == 3
    assert cfg.val_dataloader.dataset.metainfo.classes == ["sky", "road", "car"]
    train, _ = _seg_datasets(cfg)
    assert list(train.metainfo["classes"]) == ["sky", "road", "car"] and len(train.metainfo["palette"]) == 3
    assert train.label_map is None  # BaseSegDataset: no remapping of ids by name (PascalVOCDataset would)

    for bad, why in (("a,,b", "empty class name"), ("a,b,a", "repeated class names ['a']"), ("0", "at least 1")):
        with pytest.raises(SystemExit):
            _tool("export")(["--baseline", "fcn", "--dataset", "voc", "--data-root", str(voc3), "--classes", bad,
                             "--out", str(tmp_path / "bad.py")])
        assert why in capsys.readouterr().err
    assert not (tmp_path / "bad.py").exists()


def test_non_contiguous_labels_get_an_output_each(tmp_path, capsys):
    """Labels {0, 2, 5}: 6 classes (an id is an output channel), and the unused ids are named."""
    from mmengine.config import Config

    root = write_voc_set(tmp_path / "sparse", [(0, 2), (0, 5)], n_train=1)
    cfg = Config.fromfile(str(_export(tmp_path, "--baseline", "aspp", "--dataset", "voc", "--data-root", str(root))))
    out = capsys.readouterr().out
    assert "6 classes from the data: labels [0, 2, 5]" in out and "in 2 masks" in out and "[1, 3, 4]" in out
    assert cfg.model.decode_head.num_classes == 6


@pytest.mark.parametrize("what", ["no_root", "no_labels", "only_ignore", "rgb_mask"])
def test_no_usable_labels_fail_naming_the_path(what, tmp_path, capsys):
    """Without labels to count, the export fails naming the path and suggesting --classes; writes nothing."""
    root = tmp_path / "set"
    if what != "no_root":
        write_voc_set(root, [(0, 1), (1,)], n_train=1)
    named = root
    if what == "no_labels":
        for p in (root / "SegmentationClass").iterdir():
            p.unlink()
        (root / "SegmentationClass").rmdir()
        named = root / "SegmentationClass"
    elif what == "only_ignore":
        for p in (root / "SegmentationClass").iterdir():
            im = Image.fromarray(np.full((8, 8), 255, np.uint8), mode="P")
            im.putpalette(_voc_palette())
            im.save(p)
        named = root / "SegmentationClass"
    elif what == "rgb_mask":
        named = root / "SegmentationClass" / "img_000.png"
        Image.new("RGB", (8, 8), (128, 0, 0)).save(named)
    out = tmp_path / "x.py"
    rc = _tool("export")(["--baseline", "aspp", "--dataset", "voc", "--data-root", str(root), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and str(named) in err and "--classes" in err and "Traceback" not in err
    assert not out.exists()


def test_scan_reads_grayscale_masks_and_refuses_ids_beyond_255(tmp_path):
    """16-bit grayscale masks count like palette ones; a value above 255 is named with its file."""
    from densenas.tasks.segmentation.data import scan_voc_labels

    root = write_voc_set(tmp_path / "gray", [(0, 1), (0,)], n_train=1)
    Image.fromarray(np.array([[0, 3], [255, 3]], np.uint16)).save(root / "SegmentationClass" / "img_001.png")
    scan = scan_voc_labels(root)
    assert (scan.labels, scan.num_classes, scan.files, scan.missing) == ((0, 1, 3), 4, 2, (2,))
    Image.fromarray(np.array([[0, 300]], np.uint16)).save(root / "SegmentationClass" / "img_001.png")
    with pytest.raises(ValueError, match=r"img_001\.png: label values 0\.\.300"):
        scan_voc_labels(root)


def test_proxy_default_is_unchanged(tmp_path):
    """The proxy set (and the proxy named as a VOC layout) keeps its manifest's classes, as before."""
    from mmengine.config import Config

    from densenas.datasets.proxy import build_proxy_voc

    root = tmp_path / "proxy"
    manifest = build_proxy_voc(root, num_train=2, num_val=1, size=32, num_classes=3)
    for dataset in ("proxy", "voc"):
        cfg = Config.fromfile(str(_export(tmp_path, "--baseline", "aspp", "--dataset", dataset,
                                          "--data-root", str(root), out=f"{dataset}.py")))
        assert cfg.train_dataloader.dataset.metainfo.classes == manifest["classes"]
        assert cfg.model.decode_head.num_classes == len(manifest["classes"]) == 4


def test_cityscapes_default_is_unchanged(tmp_path):
    """Cityscapes keeps mmseg's CityscapesDataset and its 19 classes when no classes are given."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(_export(tmp_path, "--baseline", "fcn", "--dataset", "cityscapes",
                                      "--data-root", str(tmp_path / "cs"))))
    assert cfg.train_dataloader.dataset.type == "CityscapesDataset" and "metainfo" not in cfg.train_dataloader.dataset
    assert cfg.model.decode_head.num_classes == 19


def test_arch_found_on_the_proxy_gets_the_real_sets_classes(voc3, tmp_path, capsys):
    """An arch searched on the proxy (6 classes) exported for the user's VOC-layout set: the set's 3 classes;
    exported for the proxy it searched on: the proxy's."""
    from mmengine.config import Config

    from densenas.datasets.proxy import build_proxy_voc
    from densenas.decoders.auxcell import AuxCellSpace

    proxy = tmp_path / "proxy"
    build_proxy_voc(proxy, num_train=2, num_val=1, size=32, num_classes=5)
    search = tmp_path / "search"
    search.mkdir()
    AuxCellSpace(6, width=16).default_arch().save(search / "best_arch.json")
    (search / "config.py").write_text(f"task = dict(type='segmentation')\nspace = dict(type='auxcell', width=16)\n"
                                      f"data = dict(layout='proxy', root={str(proxy)!r})\n")
    cfg = Config.fromfile(str(_export(tmp_path, str(search / "best_arch.json"), "--dataset", "voc",
                                      "--data-root", str(voc3), out="real.py")))
    assert "3 classes from the data" in capsys.readouterr().out
    assert cfg.model.decode_head.num_classes == 3
    cfg = Config.fromfile(str(_export(tmp_path, str(search / "best_arch.json"), "--dataset", "voc",
                                      "--data-root", str(proxy), out="proxy.py")))
    assert cfg.model.decode_head.num_classes == 6


def test_classes_option_is_refused_by_tasks_without_classes(tmp_path, capsys):
    rc = _tool("export")(["--baseline", "heatmap", "--classes", "3", "--out", str(tmp_path / "k.py")])
    err = capsys.readouterr().err
    assert rc == 2 and "--classes: the keypoints task does not take it" in err
    assert "tasks that do: detection, segmentation" in err  # asked of the task plugins' export_help


def test_export_help_is_written_by_the_task_plugins(capsys):
    with pytest.raises(SystemExit):
        _tool("export")(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "optimizer. detection: adamw (default) or sgd" in out
    assert "restoration: bsd (default) or rain100" in out
    assert "segmentation: proxy (default), voc or cityscapes" in out


def test_an_option_a_task_does_not_take_is_refused_naming_the_tasks_that_do(tmp_path, capsys):
    rc = _tool("export")(["--baseline", "aspp", "--optimizer", "sgd", "--out", str(tmp_path / "a.py")])
    assert rc == 2 and "--optimizer: the segmentation task does not take it (tasks that do: detection)" in \
        capsys.readouterr().err
    assert not (tmp_path / "a.py").exists()


def test_detection_classes_option(tmp_path, capsys):
    """Detection: ``--classes N`` keeps the first N classes (VOC layout), names pass through, too many fail."""
    from mmengine.config import Config

    from densenas.datasets.det_fixtures import write_voc_det_fixture

    voc = tmp_path / "vocdet"
    write_voc_det_fixture(voc, n=2, size=(48, 64), num_classes=3)
    common = ("--baseline", "fpn_fcos", "--layout", "voc", "--data-root", str(voc), "--width", "16")
    cfg = Config.fromfile(str(_export(tmp_path, *common, "--classes", "3", out="three.py")))
    assert cfg.model.bbox_head.num_classes == 3
    assert cfg.train_dataloader.dataset.metainfo.classes == ("aeroplane", "bicycle", "bird")
    cfg = Config.fromfile(str(_export(tmp_path, *common, "--classes", "bird,aeroplane", out="named.py")))
    assert cfg.model.bbox_head.num_classes == 2
    assert cfg.val_dataloader.dataset.metainfo.classes == ("bird", "aeroplane")
    rc = _tool("export")([*common, "--classes", "21", "--out", str(tmp_path / "bad.py")])
    assert rc == 2 and "classes=21" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- detection
def write_handmade_coco(root: Path, n_train: int = 4, n_val: int = 2, size: int = 64) -> Path:
    """A COCO-layout set as people write it by hand: ``images``, ``annotations`` (no ``iscrowd``,
    no ``segmentation``) and ``categories``; no ``info``, no ``licenses``."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    ann_id = 0
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir()
        images, anns = [], []
        for i in range(n):
            img = np.full((size, size, 3), 90, np.uint8)
            for k in range(2):
                x, y = int(rng.integers(0, size // 2)), int(rng.integers(0, size // 2))
                w, h = int(rng.integers(12, size // 2)), int(rng.integers(12, size // 2))
                img[y:y + h, x:x + w] = (230, 40, 40) if k == 0 else (40, 40, 230)
                ann_id += 1
                anns.append({"id": ann_id, "image_id": i + 1, "category_id": k + 1, "bbox": [x, y, w, h],
                             "area": w * h})
            Image.fromarray(img).save(root / split / f"{i:04d}.jpg")
            images.append({"id": i + 1, "file_name": f"{i:04d}.jpg", "width": size, "height": size})
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": anns,
             "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]}))
    return root


def test_coco_without_info_fills_it_in_memory(tmp_path):
    """``DenseNASCocoMetric`` loads a file without ``info`` / ``iscrowd``: its ground truth has them (so
    ``loadRes`` and ``COCOeval`` work under any pycocotools); the file itself is left as it was."""
    from mmdet.registry import METRICS

    from densenas.tasks.detection.mm import DenseNASCocoMetric  # the config's custom_imports registers it

    root = write_handmade_coco(tmp_path / "coco", n_train=1, n_val=1)
    ann = root / "annotations" / "instances_val.json"
    before = ann.read_bytes()
    metric = METRICS.build(dict(type="DenseNASCocoMetric", _scope_="mmdet", ann_file=str(ann), metric="bbox"))
    assert type(metric) is DenseNASCocoMetric
    gt = metric._coco_api
    assert gt.dataset["info"] == {} and all(a["iscrowd"] == 0 for a in gt.anns.values())
    res = gt.loadRes([{"image_id": 1, "category_id": 1, "bbox": [1.0, 1.0, 10.0, 10.0], "score": 0.9}])
    assert len(res.getAnnIds()) == 1
    assert ann.read_bytes() == before


def test_search_data_says_what_the_coco_file_lacks(tmp_path):
    from densenas.tasks.detection.data import build_det_data

    root = write_handmade_coco(tmp_path / "coco", n_train=2, n_val=1)
    lines: list[str] = []
    data = build_det_data({"layout": "coco", "root": str(root), "image_size": 64}, log=lines.append)
    assert data.classes == ("red", "blue")
    note = next(line for line in lines if line.startswith("note:"))
    assert str(root / "annotations" / "instances_val.json") in note
    assert "top-level 'info'" in note and "'iscrowd' in 2 of 2 annotations" in note and '"info": {}' in note


def test_coco_without_info_finetunes_and_evaluates(tmp_path, capsys):
    """Export the FCOS baseline for a hand-made COCO set without ``info``, fine-tune 2 iterations with
    tools/train.py (validation at the end of training and once more after): COCO bbox mAP numbers, no
    ``KeyError: 'info'`` (pycocotools 2.0.9 / 2.0.10) or ``'iscrowd'`` (COCOeval)."""
    from mmengine.config import Config

    root = write_handmade_coco(tmp_path / "coco")
    cfg_path = _export(tmp_path, "--baseline", "fpn_fcos", "--data-root", str(root), "--width", "16")
    exported = capsys.readouterr().out
    # untrained heads score ~0.01 (focal prior): keep every box so the metric has detections to rate
    opts = ["model.backbone.backbone.pretrained=False", "model.test_cfg.score_thr=0.0"]
    assert _tool("train")([str(cfg_path), "--cfg-options", *opts]) == 0
    out = capsys.readouterr().out
    metrics = ast.literal_eval(re.search(r"final val metrics: (\{.*\})", out).group(1))
    for key in ("coco/bbox_mAP", "coco/bbox_mAP_50", "coco/bbox_mAP_75"):
        assert isinstance(metrics[key], float) and -1.0 <= metrics[key] <= 1.0, (key, metrics)
    scalars = [json.loads(line) for line in (tmp_path / "work").glob("*/vis_data/scalars.json")
               .__next__().read_text().splitlines()]
    assert any("coco/bbox_mAP" in s for s in scalars)  # the validation inside training ran too
    cfg = Config.fromfile(str(cfg_path))
    assert cfg.val_evaluator.type == cfg.test_evaluator.type == "DenseNASCocoMetric"
    assert "lacks top-level 'info'" in exported and "DenseNASCocoMetric" in exported
