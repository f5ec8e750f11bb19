"""Tests for densenas.datasets: the proxy VOC builder, the VOC/Cityscapes readers and the fixture writers."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densenas.datasets import (CITYSCAPES_LABELID_TO_TRAINID, MANIFEST_NAME, PROXY_CLASSES, SegmentationFolder,
                               build_proxy_voc, labelids_to_trainids, write_cityscapes_fixture,
                               write_voc_fixture)

SMALL = dict(num_train=6, num_val=3, size=64, num_classes=5)


def _labels(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "SegmentationClass").glob("*.png"))}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory) -> tuple[Path, dict]:
    pytest.importorskip("skimage")
    root = tmp_path_factory.mktemp("proxy")
    return root, build_proxy_voc(root, seed=0, **SMALL)


# ----------------------------------------------------------------------------------------------- proxy
def test_proxy_layout_and_manifest(proxy):
    root, manifest = proxy
    for rel in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/train.txt",
                "ImageSets/Segmentation/val.txt", MANIFEST_NAME):
        assert (root / rel).exists(), rel
    assert json.loads((root / MANIFEST_NAME).read_text()) == manifest
    assert manifest["params"]["seed"] == 0 and manifest["params"]["num_classes"] == 5
    assert manifest["classes"] == list(PROXY_CLASSES[:6])
    assert manifest["classes"][:3] == ["background", "coffee", "cat"]
    train = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    val = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    assert len(train) == 6 and len(val) == 3 and not set(train) & set(val)
    for i in train + val:
        assert Image.open(root / "JPEGImages" / f"{i}.jpg").size == (64, 64)
        lab = Image.open(root / "SegmentationClass" / f"{i}.png")
        assert lab.mode == "P" and lab.size == (64, 64)
        assert lab.getpalette()[:6] == [0, 0, 0, 128, 0, 0]  # VOC palette


def test_proxy_masks_have_several_classes(proxy):
    root, manifest = proxy
    seen = set()
    for p in (root / "SegmentationClass").glob("*.png"):
        values = set(np.unique(np.asarray(Image.open(p))).tolist())
        assert values <= set(range(6)), p
        assert len(values - {0}) >= 2, p  # at least two foreground classes per image
        seen |= values
    assert seen == set(range(6))
    assert all(f > 0 for f in manifest["class_pixel_fraction"].values())


def test_proxy_deterministic_and_seed_sensitive(proxy, tmp_path):
    root, _ = proxy
    build_proxy_voc(tmp_path / "a", seed=0, **SMALL)
    build_proxy_voc(tmp_path / "b", seed=1, **SMALL)
    assert _labels(tmp_path / "a") == _labels(root)
    assert _labels(tmp_path / "b") != _labels(root)


def test_proxy_idempotent_and_regenerates(tmp_path):
    pytest.importorskip("skimage")
    root = tmp_path / "p"
    m1 = build_proxy_voc(root, seed=3, **SMALL)
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert build_proxy_voc(root, seed=3, **SMALL) == m1
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamp
    # different params: regenerate, stale files removed
    m2 = build_proxy_voc(root, seed=3, **{**SMALL, "num_train": 2, "num_val": 1})
    assert m2["params"]["num_train"] == 2
    assert len(list((root / "SegmentationClass").glob("*.png"))) == 3
    # missing file: regenerate even though the manifest matches
    next((root / "JPEGImages").glob("*.jpg")).unlink()
    build_proxy_voc(root, seed=3, **{**SMALL, "num_train": 2, "num_val": 1})
    assert len(list((root / "JPEGImages").glob("*.jpg"))) == 3


def test_proxy_boundary_and_bad_params(tmp_path):
    pytest.importorskip("skimage")
    build_proxy_voc(tmp_path / "b", num_train=2, num_val=1, size=48, num_classes=3, boundary=2)
    values = np.unique(np.asarray(Image.open(next((tmp_path / "b/SegmentationClass").glob("*.png")))))
    assert 255 in values and set(values.tolist()) <= {0, 1, 2, 3, 255}
    with pytest.raises(ValueError, match="num_classes"):
        build_proxy_voc(tmp_path / "c", num_classes=99)


def test_proxy_read_back_exact(proxy):
    root, _ = proxy
    ds = SegmentationFolder(root, "val")
    assert ds.num_classes == 6 and ds.classes == tuple(PROXY_CLASSES[:6]) and len(ds) == 3
    for i, sid in enumerate(ds.ids):
        image, label = ds[i]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        expected = np.asarray(Image.open(root / "SegmentationClass" / f"{sid}.png")).astype(np.int64)
        assert torch.equal(label, torch.from_numpy(expected))
    x, y = SegmentationFolder(root, "train").load_arrays(32, max_items=4)
    assert x.shape == (4, 3, 32, 32) and y.shape == (4, 32, 32) and y.dtype == torch.long
    assert -2.2 < x.min() and x.max() < 2.7 and abs(float(x.mean())) < 1.5  # ImageNet-normalised
    assert set(y.unique().tolist()) <= set(range(6))


# ----------------------------------------------------------------------------------------------- readers
def test_voc_fixture_reader(tmp_path):
    info = write_voc_fixture(tmp_path, n=5, size=(40, 48), num_classes=3)
    ds = SegmentationFolder(tmp_path, "train", num_classes=3)
    assert ds.ids == info["splits"]["train"] and len(ds) == 3
    assert len(SegmentationFolder(tmp_path, "val", num_classes=3)) == 2
    image, label = ds[0]
    assert image.shape == (3, 40, 48) and label.shape == (40, 48) and label.dtype == torch.int64
    assert set(label.unique().tolist()) <= {0, 1, 2, 255} and 255 in label.unique()
    assert (label[0] == 255).all()
    x, y = ds.load_arrays((20, 24))
    assert x.shape == (3, 3, 20, 24) and y.shape == (3, 20, 24)
    assert ds.describe()["num_items"] == 3 and "voc" in repr(ds)
    # default num_classes is VOC's 21
    assert SegmentationFolder(tmp_path, "train").num_classes == 21


@pytest.mark.parametrize("trainids", [True, False])
def test_cityscapes_fixture_reader(tmp_path, trainids):
    info = write_cityscapes_fixture(tmp_path, n=3, size=(32, 64), trainids=trainids)
    gt = tmp_path / "gtFine/train/aachen"
    assert len(list(gt.glob("*_gtFine_labelTrainIds.png"))) == (3 if trainids else 0)
    ds = SegmentationFolder(tmp_path, "train", layout="cityscapes")
    assert len(ds) == 3 and ds.num_classes == 19 and ds.classes[0] == "road"
    assert ds.ids == [f"aachen/{n}" for n in info["splits"]["train"]]
    image, label = ds[2]
    assert image.shape == (3, 32, 64) and label.shape == (32, 64)
    raw = np.asarray(Image.open(gt / f"{info['splits']['train'][2]}_gtFine_labelIds.png"))
    assert torch.equal(label, torch.from_numpy(labelids_to_trainids(raw).astype(np.int64)))
    assert (label[-2:] == 255).all()  # ego vehicle is ignored
    assert len(SegmentationFolder(tmp_path, "val", layout="cityscapes")) == 3


def test_labelid_table():
    assert len(CITYSCAPES_LABELID_TO_TRAINID) == 34
    assert sorted(v for v in CITYSCAPES_LABELID_TO_TRAINID.values() if v != 255) == list(range(19))
    assert labelids_to_trainids(np.array([7, 26, 33, 0])).tolist() == [0, 13, 18, 255]
    with pytest.raises(ValueError, match="34"):
        labelids_to_trainids(np.array([34]))


# ----------------------------------------------------------------------------------------------- errors
def test_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*JPEGImages"):
        SegmentationFolder(missing, "train")
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*leftImg8bit"):
        SegmentationFolder(missing, "train", layout="cityscapes")
    with pytest.raises(ValueError, match="layout"):
        SegmentationFolder(tmp_path, "train", layout="coco")


def test_missing_split_and_files(tmp_path):
    write_voc_fixture(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape("ImageSets/Segmentation/test.txt")):
        SegmentationFolder(tmp_path, "test")
    (tmp_path / "JPEGImages/2007_000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("JPEGImages/2007_000001.jpg")):
        SegmentationFolder(tmp_path, "train")
    (tmp_path / "SegmentationClass/2007_000003.png").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("SegmentationClass/2007_000003.png")):
        SegmentationFolder(tmp_path, "val")
    write_cityscapes_fixture(tmp_path / "cs", trainids=False)
    with pytest.raises(FileNotFoundError, match="leftImg8bit/test"):
        SegmentationFolder(tmp_path / "cs", "test", layout="cityscapes")
    next((tmp_path / "cs/gtFine/val/aachen").glob("*_labelIds.png")).unlink()
    with pytest.raises(FileNotFoundError, match="_gtFine_labelTrainIds.png"):
        SegmentationFolder(tmp_path / "cs", "val", layout="cityscapes")


def test_corrupted_annotation(tmp_path):
    write_voc_fixture(tmp_path)
    bad = tmp_path / "SegmentationClass/2007_000000.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    ds = SegmentationFolder(tmp_path, "train", num_classes=3)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        ds[0]
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        ds.load_arrays(16)
    Image.new("RGB", (48, 40)).save(bad)  # an RGB colour mask instead of palette indices
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*mode 'RGB'"):
        ds[0]
    bad_img = tmp_path / "JPEGImages/2007_000001.jpg"
    bad_img.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=re.escape(str(bad_img))):
        ds[1]


def test_label_values_out_of_range(tmp_path):
    write_voc_fixture(tmp_path, num_classes=3)
    ds = SegmentationFolder(tmp_path, "train", num_classes=2)
    with pytest.raises(ValueError, match=r"2007_\d+\.png.*values \[2\].*num_classes=2"):
        for i in range(len(ds)):
            ds[i]
    write_cityscapes_fixture(tmp_path / "cs", trainids=True)
    lab = next((tmp_path / "cs/gtFine/train/aachen").glob("*_labelTrainIds.png"))
    Image.fromarray(np.full((32, 64), 19, np.uint8)).save(lab)
    cs = SegmentationFolder(tmp_path / "cs", "train", layout="cityscapes")
    with pytest.raises(ValueError, match=re.escape(lab.name) + r".*\[19\]"):
        cs.load_arrays(16)
    ids = next((tmp_path / "cs/gtFine/val/aachen").glob("*_labelIds.png"))
    Image.fromarray(np.full((32, 64), 40, np.uint8)).save(ids)
    for p in (tmp_path / "cs/gtFine/val/aachen").glob("*_labelTrainIds.png"):
        p.unlink()
    with pytest.raises(ValueError, match=re.escape(ids.name) + r".*\[40\]"):
        SegmentationFolder(tmp_path / "cs", "val", layout="cityscapes").load_arrays(16)
