"""Tests for the detection data: the proxy COCO builder, the COCO/VOC readers, mmdet's readers and CocoMetric."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densenas.datasets.det_fixtures import write_coco_fixture, write_voc_det_fixture
from densenas.datasets.detfolder import DetectionFolder, mmdet_dataset_cfg
from densenas.datasets.proxy_det import (COCO_LARGE_AREA, COCO_SMALL_AREA, DET_MANIFEST_NAME, MIN_VISIBILITY,
                                         area_bin, build_proxy_coco, coco_classes, proxy_det_scenes)

pytest.importorskip("skimage")
SMALL = dict(num_train=10, num_val=6, size=128, num_classes=4)
CLASSES = ("coffee", "cat", "tissue", "galaxy")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _mmdet():
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    register_all_modules()
    return DATASETS


@pytest.fixture(scope="module")
def proxy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("proxy_coco")
    assert build_proxy_coco(root, seed=0, log=None, **SMALL) == CLASSES
    return root


# ----------------------------------------------------------------------------------------------- proxy
def test_proxy_layout_loads_with_pycocotools(proxy):
    from pycocotools.coco import COCO

    manifest = json.loads((proxy / DET_MANIFEST_NAME).read_text())
    assert manifest["classes"] == list(CLASSES) and manifest["params"]["seed"] == 0
    bins = {"small": 0, "medium": 0, "large": 0}
    for split, n in (("train", 10), ("val", 6)):
        coco = COCO(str(proxy / "annotations" / f"instances_{split}.json"))
        assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == list(CLASSES)
        assert sorted(coco.cats) == [1, 2, 3, 4] and len(coco.imgs) == n
        for img_id, img in coco.imgs.items():
            assert Image.open(proxy / split / img["file_name"]).size == (128, 128) == (img["width"], img["height"])
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
            assert 1 <= len(anns) <= 4
            for a in anns:
                assert a["iscrowd"] == 0 and a["category_id"] in coco.cats and a["area"] > 0
                bins[area_bin(a["area"])] += 1
        assert sum(manifest["counts"][split][b] for b in bins) == manifest["counts"][split]["objects"] == len(coco.anns)
    assert all(v > 0 for v in bins.values()), bins  # COCO small, medium and large all occur at 128 px
    assert coco_classes(proxy) == coco_classes(proxy, "val") == CLASSES


def test_proxy_boxes_exactly_bound_visible_masks(proxy):
    """Boxes, areas and RLE masks in the files are the exact visible extent of what was pasted."""
    from pycocotools.coco import COCO

    cocos = {s: COCO(str(proxy / "annotations" / f"instances_{s}.json")) for s in ("train", "val")}
    occluded = 0
    for split, name, scene in proxy_det_scenes(seed=0, **SMALL):
        coco = cocos[split]
        img_id = next(i for i, im in coco.imgs.items() if im["file_name"] == name)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        assert [a["category_id"] - 1 for a in anns] == list(scene.labels)
        # pixels differ from the background only where an object is visible
        changed = (scene.image != scene.background).any(axis=2)
        assert not changed[scene.instances == 0].any()
        assert changed[scene.instances > 0].mean() > 0.9
        written = np.asarray(Image.open(proxy / split / name), np.float32)
        assert np.abs(written - scene.image).mean() < 8  # the JPEG is this image
        for k, (a, full) in enumerate(zip(anns, scene.areas)):
            mask = scene.instances == k + 1
            assert np.array_equal(coco.annToMask(a).astype(bool), mask)
            ys, xs = np.nonzero(mask)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert a["area"] == mask.sum() and area_bin(a["area"]) == area_bin(full)
            assert MIN_VISIBILITY * full <= mask.sum() <= full
            occluded += int(mask.sum() < full)
    assert occluded > 0  # some objects are partly hidden and their boxes shrink to the visible part


def test_proxy_deterministic_and_seed_sensitive(proxy, tmp_path):
    build_proxy_coco(tmp_path / "a", seed=0, log=None, **SMALL)
    build_proxy_coco(tmp_path / "b", seed=1, log=None, **SMALL)
    assert _files(tmp_path / "a") == _files(proxy)
    assert _files(tmp_path / "b")["annotations/instances_train.json"] != _files(proxy)[
        "annotations/instances_train.json"]


def test_proxy_idempotent_and_regenerates(tmp_path):
    root, small = tmp_path / "p", dict(SMALL, num_train=3, num_val=2, size=64, num_classes=2)
    lines: list[str] = []
    assert build_proxy_coco(root, seed=3, log=lines.append, **small) == CLASSES[:2]
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert build_proxy_coco(root, seed=3, log=lines.append, **small) == CLASSES[:2]
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamp
    assert "up to date" in lines[-1]
    build_proxy_coco(root, seed=3, log=None, **dict(small, num_train=1))  # new params: stale files removed
    assert len(list((root / "train").glob("*.jpg"))) == 1
    assert json.loads((root / DET_MANIFEST_NAME).read_text())["params"]["num_train"] == 1
    next((root / "val").glob("*.jpg")).unlink()  # missing file: regenerate although the manifest matches
    build_proxy_coco(root, seed=3, log=lines.append, **dict(small, num_train=1))
    assert len(list((root / "val").glob("*.jpg"))) == 2 and "building" in lines[-2]


def test_proxy_bad_params(tmp_path):
    with pytest.raises(ValueError, match="num_classes"):
        build_proxy_coco(tmp_path, num_classes=99, log=None)
    with pytest.raises(ValueError, match="size"):
        build_proxy_coco(tmp_path, size=16, log=None)
    # pycocotools' area ranges: small < 32^2 <= medium < 96^2 <= large
    assert [area_bin(a) for a in (COCO_SMALL_AREA - 1, COCO_SMALL_AREA, COCO_LARGE_AREA - 1, COCO_LARGE_AREA)] == \
        ["small", "medium", "medium", "large"]


# ----------------------------------------------------------------------------------------------- readers
def test_reader_on_proxy_matches_files_and_mmdet(proxy):
    ds = DetectionFolder(proxy, "val")
    coco = json.loads((proxy / "annotations/instances_val.json").read_text())
    assert ds.classes == CLASSES and len(ds) == 6
    image, boxes, labels = ds[0]
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    anns = [a for a in coco["annotations"] if a["image_id"] == coco["images"][0]["id"]]
    assert boxes.tolist() == [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
    assert labels.tolist() == [a["category_id"] - 1 for a in anns]
    x, bxs, lbs = ds.load_arrays(64, max_items=4)
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32 and len(bxs) == len(lbs) == 4
    assert -2.2 < x.min() and x.max() < 2.7  # ImageNet-normalised
    assert torch.equal(bxs[0], torch.from_numpy(boxes) / 2) and torch.equal(lbs[0], torch.from_numpy(labels))
    # mmdet's CocoDataset reads the same files into the same boxes, and its pipeline runs on them
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True),
                dict(type="PackDetInputs")]
    mm = _mmdet().build(mmdet_dataset_cfg(proxy, "val", "coco", pipeline))
    assert len(mm) == len(ds) and tuple(mm.metainfo["classes"]) == CLASSES
    for i, rec in enumerate(ds.records):
        inst = mm.get_data_info(i)["instances"]
        assert [d["bbox"] for d in inst] == rec.boxes.tolist() and [d["bbox_label"] for d in inst] == rec.labels.tolist()
    sample = mm[0]["data_samples"]
    assert np.allclose(sample.gt_instances.bboxes.tensor.numpy(), boxes)
    assert sample.gt_instances.labels.tolist() == labels.tolist()


def test_coco_fixture_reader_and_mmdet(tmp_path):
    info = write_coco_fixture(tmp_path, n=5, size=(48, 64), num_classes=3)
    assert info["category_ids"] == (1, 3, 13)  # real COCO ids, with gaps
    ds = DetectionFolder(tmp_path, "train")
    assert ds.classes == ("person", "car", "stop sign") and len(ds) == 3 and len(DetectionFolder(tmp_path, "val")) == 2
    coco = json.loads((tmp_path / "annotations/instances_train.json").read_text())
    first = [a for a in coco["annotations"] if a["image_id"] == 1]
    assert ds.records[0].ignored.tolist() == [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                              a["bbox"][1] + a["bbox"][3]] for a in first if a["iscrowd"]]
    assert ds.records[0].labels.tolist() == [(1, 3, 13).index(a["category_id"]) for a in first if not a["iscrowd"]]
    image, boxes, _ = ds[0]
    assert image.shape == (48, 64, 3) and boxes.dtype == np.float32
    _, bxs, _ = ds.load_arrays((24, 16))
    assert torch.allclose(bxs[0], torch.from_numpy(boxes) * torch.tensor([0.25, 0.5, 0.25, 0.5]))
    mm = _mmdet().build(mmdet_dataset_cfg(tmp_path, "train", "coco"))
    for i, rec in enumerate(ds.records):
        inst = mm.get_data_info(i)["instances"]
        assert [d["bbox"] for d in inst if not d["ignore_flag"]] == rec.boxes.tolist()
        assert [d["bbox"] for d in inst if d["ignore_flag"]] == rec.ignored.tolist()
        assert [d["bbox_label"] for d in inst if not d["ignore_flag"]] == rec.labels.tolist()
    sub = DetectionFolder(tmp_path, "train", classes=("car",))  # a class subset skips the others, as mmdet does
    assert sub.describe()["num_objects"] == sum(1 for a in coco["annotations"] if a["category_id"] == 3)


def test_voc_fixture_reader_and_mmdet(tmp_path):
    info = write_voc_det_fixture(tmp_path, n=4, size=(48, 64), num_classes=3)
    classes = info["classes"]
    assert classes == ("aeroplane", "bicycle", "bird")
    ds = DetectionFolder(tmp_path, "val", layout="voc")  # default: the 20 VOC classes
    assert len(ds.classes) == 20 and [r.image_id for r in ds.records] == info["splits"]["val"]
    assert ds.describe()["num_ignored"] == 1  # the difficult object of the last image
    _, boxes, labels = ds[0]
    xml = (tmp_path / "Annotations" / f"{info['splits']['val'][0]}.xml").read_text()
    first = [int(re.search(f"<{t}>(\\d+)</{t}>", xml).group(1)) - 1 for t in ("xmin", "ymin", "xmax", "ymax")]
    assert boxes[0].tolist() == first and labels.max() < 3
    mm = _mmdet().build(mmdet_dataset_cfg(tmp_path, "val", "voc", classes=classes))
    ours = DetectionFolder(tmp_path, "val", layout="voc", classes=classes)
    assert len(mm) == len(ours) == 2
    for i, rec in enumerate(ours.records):
        inst = mm.get_data_info(i)["instances"]
        assert [d["bbox"] for d in inst if not d["ignore_flag"]] == rec.boxes.tolist()
        assert [d["bbox"] for d in inst if d["ignore_flag"]] == rec.ignored.tolist()
        assert [d["bbox_label"] for d in inst if not d["ignore_flag"]] == rec.labels.tolist()
    x, bxs, _ = ours.load_arrays(32)
    assert x.shape == (2, 3, 32, 32) and torch.allclose(bxs[1], torch.from_numpy(ours.records[1].boxes) *
                                                         torch.tensor([0.5, 2 / 3, 0.5, 2 / 3]))


# ----------------------------------------------------------------------------------------------- metric
def _coco_metric(ann_file: Path, classes, preds: dict[int, tuple[list, list, list]]) -> dict[str, float]:
    _mmdet()
    from mmdet.evaluation import CocoMetric

    metric = CocoMetric(ann_file=str(ann_file), metric="bbox")
    metric.dataset_meta = dict(classes=tuple(classes))
    samples = [dict(img_id=i, ori_shape=(128, 128), pred_instances=dict(
        bboxes=torch.tensor(b, dtype=torch.float32).reshape(-1, 4), scores=torch.tensor(s, dtype=torch.float32),
        labels=torch.tensor(lab, dtype=torch.long))) for i, (b, s, lab) in preds.items()]
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def test_coco_metric_ground_truth_scores_one(proxy):
    coco = json.loads((proxy / "annotations/instances_train.json").read_text())
    preds = {im["id"]: ([], [], []) for im in coco["images"]}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        preds[a["image_id"]][0].append([x, y, x + w, y + h])
        preds[a["image_id"]][1].append(1.0)
        preds[a["image_id"]][2].append(a["category_id"] - 1)
    res = _coco_metric(proxy / "annotations/instances_train.json", CLASSES, preds)
    for key in ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"):
        assert res[f"coco/{key}"] == pytest.approx(1.0), (key, res)


@pytest.mark.parametrize("shift, mAP, mAP_75", [(0, 1.0, 1.0), (2, 0.85, 1.0), (6, 0.55, 0.5)])
def test_coco_metric_shifted_box(tmp_path, shift, mAP, mAP_75):
    """Two classes, one 20x20 box each; class B's prediction is shifted right by ``shift`` px.

    IoU(shift 2) = 18*20 / (800 - 360) = 0.818: matched at IoU thresholds 0.50..0.80 (7 of 10) -> AP_B 0.7,
    mAP (1 + 0.7) / 2 = 0.85. IoU(shift 6) = 14*20 / (800 - 280) = 0.538: only 0.50 -> AP_B 0.1, mAP 0.55.
    """
    ann = {"info": {}, "images": [{"id": 1, "file_name": "a.jpg", "width": 128, "height": 128}],
           "categories": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400,
                            "iscrowd": 0},
                           {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20], "area": 400,
                            "iscrowd": 0}]}
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(ann))
    res = _coco_metric(path, ("A", "B"), {1: ([[10, 10, 30, 30], [50 + shift, 50, 70 + shift, 70]], [1.0, 1.0],
                                              [0, 1])})
    assert res["coco/bbox_mAP"] == pytest.approx(mAP, abs=1e-3)
    assert res["coco/bbox_mAP_50"] == pytest.approx(1.0) and res["coco/bbox_mAP_75"] == pytest.approx(mAP_75)
    assert res["coco/bbox_mAP_s"] == pytest.approx(mAP, abs=1e-3) and res["coco/bbox_mAP_l"] == -1.0


# ----------------------------------------------------------------------------------------------- errors
def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_layout_errors(tmp_path):
    missing = tmp_path / "nowhere"
    for layout, hint in (("coco", "annotations/instances_"), ("voc", "ImageSets/Main")):
        with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*" + re.escape(hint)):
            DetectionFolder(missing, "train", layout=layout)
    with pytest.raises(ValueError, match="layout"):
        DetectionFolder(tmp_path, "train", layout="cityscapes")
    write_coco_fixture(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "c/annotations/instances_test.json"))):
        DetectionFolder(tmp_path / "c", "test")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "c/annotations/instances_test.json"))):
        coco_classes(tmp_path / "c", "test")
    write_voc_det_fixture(tmp_path / "v")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "v/ImageSets/Main/test.txt"))):
        DetectionFolder(tmp_path / "v", "test", layout="voc")


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("images"), "field 'images' is missing"),
    (lambda d: d["annotations"][0].update(image_id=999), r"annotations\[0\] \(id \d+\): field 'image_id' 999"),
    (lambda d: d["annotations"][0].update(category_id=77), r"annotations\[0\].*'category_id' 77"),
    (lambda d: d["annotations"][0].update(bbox=[50.0, 5.0, 30.0, 4.0]), r"annotations\[0\].*'bbox'.*outside"),
    (lambda d: d["annotations"][0].update(bbox=[-3.0, 5.0, 10.0, 4.0]), r"annotations\[0\].*'bbox'.*outside"),
    (lambda d: d["annotations"][1].update(bbox=[5.0, 5.0, 0.0, 4.0]), r"annotations\[1\].*'bbox'.*non-positive"),
    (lambda d: d["annotations"][1].update(bbox=[5.0, 5.0]), r"annotations\[1\].*'bbox' must be"),
    (lambda d: d["annotations"][0].pop("area"), r"annotations\[0\] has no field 'area'"),
    (lambda d: d["images"][0].pop("height"), r"images\[0\] has no field 'height'"),
    (lambda d: d["categories"].append({"id": 1, "name": "x"}), r"categories\[3\] repeats category id 1"),
])
def test_coco_annotation_errors(tmp_path, edit, match):
    write_coco_fixture(tmp_path)
    ann = tmp_path / "annotations/instances_train.json"
    _edit_json(ann, edit)
    with pytest.raises(ValueError, match=re.escape(str(ann)) + ".*" + match):
        DetectionFolder(tmp_path, "train")


def test_coco_file_errors(tmp_path):
    write_coco_fixture(tmp_path)
    ann = tmp_path / "annotations/instances_val.json"
    ann.write_text('{"images": [')
    for call in (lambda: DetectionFolder(tmp_path, "val"), lambda: coco_classes(tmp_path, "val")):
        with pytest.raises(ValueError, match=re.escape(str(ann)) + ".*malformed"):
            call()
    img = tmp_path / "train/000000000002.jpg"
    img.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(img)) + r".*image id 2"):
        DetectionFolder(tmp_path, "train")
    Image.new("RGB", (20, 10)).save(img)  # present, but not the size the annotation says
    ds = DetectionFolder(tmp_path, "train")
    with pytest.raises(ValueError, match=re.escape(str(img)) + ".*20x10.*64x48"):
        ds.load_arrays(16)
    with pytest.raises(ValueError, match="classes.*'zebra'"):
        DetectionFolder(tmp_path, "train", classes=("zebra",))


def _edit_xml(path: Path, old: str, new: str) -> None:
    """Replace the first match of the regex ``old`` (dot matches newlines) in an xml file."""
    text, n = re.subn(old, new, path.read_text(), count=1, flags=re.S)
    assert n == 1, old
    path.write_text(text)


@pytest.mark.parametrize("old, new, match", [
    (r"<size>.*?</size>", "", "<size>"),
    ("<width>64</width>", "<width>abc</width>", "<size>"),
    (r"<xmin>\d+</xmin>", "", r"<object> 0 .*bad <bndbox>"),
    (r"<bndbox>(.*?)</bndbox>", r"<box>\1</box>", r"<object> 0 .*bad <bndbox>"),
    ("<ymax>", "<ymax>x", r"<object> 0 .*bad <bndbox>"),
    ("<xmax>", "<xmax>9", r"<object> 0 .*<bndbox> .* outside the <size> 64x48"),
    ("<xmin>", "<xmin>9", r"<object> 0 .*<bndbox> .* non-positive size"),
    ("<name>aeroplane", "<name>zebra", r"<object> \d .*'zebra' is not a known class"),
    ("<annotation>", "<annotation><oops>", "malformed XML"),
])
def test_voc_annotation_errors(tmp_path, old, new, match):
    info = write_voc_det_fixture(tmp_path, n=4)
    sid = info["splits"]["train"][0]
    xml = tmp_path / "Annotations" / f"{sid}.xml"
    if "aeroplane" in old and "aeroplane" not in xml.read_text():
        xml = next(p for p in (tmp_path / "Annotations").glob("*.xml") if "aeroplane" in p.read_text())
        (tmp_path / "ImageSets/Main/train.txt").write_text(xml.stem + "\n")
    _edit_xml(xml, old, new)
    with pytest.raises(ValueError, match=re.escape(str(xml)) + ".*" + match):
        DetectionFolder(tmp_path, "train", layout="voc")


def test_voc_missing_files(tmp_path):
    info = write_voc_det_fixture(tmp_path)
    sid = info["splits"]["val"][1]
    xml, img = tmp_path / "Annotations" / f"{sid}.xml", tmp_path / "JPEGImages" / f"{sid}.jpg"
    shutil.move(xml, tmp_path / "moved.xml")
    with pytest.raises(FileNotFoundError, match=re.escape(str(xml)) + ".*" + re.escape("ImageSets/Main/val.txt")):
        DetectionFolder(tmp_path, "val", layout="voc")
    shutil.move(tmp_path / "moved.xml", xml)
    img.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(img))):
        DetectionFolder(tmp_path, "val", layout="voc")
