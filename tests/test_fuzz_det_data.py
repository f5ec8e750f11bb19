"""Fuzzing detection annotations (issue 16): COCO JSON and VOC XML, each mutated at random from a valid tiny
fixture (``densenas.datasets.det_fixtures``). The detection data builder either loads the data -- and then
its boxes lie inside the images and its labels within the classes -- or raises ``FileNotFoundError`` /
``ValueError`` naming the offending file, never an error from inside a reader (see ``test_fuzz_data.py``).
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import torch
from _fuzz import _remove_copies  # noqa: F401  (autouse: removes this module's scratch copies)
from _fuzz import FUZZ, copy_of, edit_split_list, loads_or_fails_clearly, mutate_json
from hypothesis import given, settings
from hypothesis import strategies as st

from densenas.datasets.det_fixtures import write_coco_fixture, write_voc_det_fixture
from densenas.tasks.detection.data import build_det_data

pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning",
                                        "ignore:Truncated File Read:UserWarning")


# --------------------------------------------------------------------------------- COCO detection
@pytest.fixture(scope="module")
def coco_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco") / "coco"
    write_coco_fixture(root, n=4, size=(24, 32), num_classes=3)
    return root




WRONG = st.sampled_from([None, True, False, "1", 1.5, -1, 0, [1], {"id": 1}, float("nan")])
"""Values of the wrong kind for an id / size field (``True`` == 1 and ``[1]`` is unhashable in Python)."""


def semantic_coco(data: st.DataObject, doc: dict[str, Any]) -> None:
    """The mistakes real annotation files have: boxes outside the image or of negative size, unknown or
    ill-typed category / image / annotation ids, repeated ids, image sizes that disagree with the file."""
    anns, imgs, cats = doc["annotations"], doc["images"], doc["categories"]
    how = data.draw(st.sampled_from(["box", "category", "image_id", "ann_id", "img_id", "cat_id", "repeat", "size",
                                     "file"]))
    a = data.draw(st.sampled_from(anns)) if anns else None
    if how == "box" and a:
        a["bbox"] = data.draw(st.lists(st.floats(-50, 80) | st.integers(-50, 80), min_size=4, max_size=4)
                              | st.lists(st.floats(), max_size=5))
    elif how in ("category", "image_id", "ann_id") and a:
        key = {"category": "category_id", "image_id": "image_id", "ann_id": "id"}[how]
        a[key] = data.draw(WRONG | st.integers(-2, 10)) if key == "category_id" else data.draw(WRONG)
    elif how == "img_id" and imgs:
        data.draw(st.sampled_from(imgs))["id"] = data.draw(WRONG)
    elif how == "cat_id" and cats:
        data.draw(st.sampled_from(cats))["id"] = data.draw(WRONG)
    elif how == "repeat" and len(imgs) > 1:
        imgs[1]["id"] = imgs[0]["id"]
    elif how == "size" and imgs:
        im = data.draw(st.sampled_from(imgs))
        im[data.draw(st.sampled_from(["width", "height"]))] = data.draw(st.integers(-3, 64) | WRONG)
    elif imgs:
        imgs[0]["file_name"] = data.draw(st.sampled_from(["missing.jpg", "", ".", "../train", [1], {"a": 1}, 7]))


def check_det(out: Any) -> None:
    for x, boxes, labels in (out.train, out.val):
        assert bool(torch.isfinite(x).all()) and len(boxes) == len(labels) == x.shape[0]
        side = x.shape[-1]
        for b, lab in zip(boxes, labels):
            assert b.shape == (len(lab), 4) and bool(torch.isfinite(b).all())
            assert bool((b[:, :2] >= 0).all() and (b[:, 2:] <= side + 1e-3).all() and (b[:, 2:] >= b[:, :2]).all())
            assert bool(((lab >= 0) & (lab < len(out.classes))).all())


@settings(max_examples=120, **FUZZ)
@given(data=st.data(), split=st.sampled_from(["train", "val"]), semantic=st.booleans(),
       deep=st.integers(0, 5).map(lambda k: k == 0))
def test_coco_annotations(coco_template, data, split, semantic, deep):
    root = copy_of(coco_template)
    ann = root / f"annotations/instances_{split}.json"
    doc = json.loads(ann.read_text())
    if semantic:
        semantic_coco(data, doc)
    else:
        for _ in range(data.draw(st.integers(1, 3))):
            doc = mutate_json(data, doc)
    text = json.dumps(doc)
    if deep:  # a truncated or nested-to-death file
        text = data.draw(st.sampled_from([text[:len(text) // 2], "[" * 50_000, text.replace('"', "'", 3)]))
    ann.write_text(text)
    cfg = {"layout": "coco", "root": str(root), "image_size": 16}
    out = loads_or_fails_clearly(lambda: build_det_data(cfg, source="fuzz.py", log=lambda *_: None), root)
    if out is not None:
        check_det(out)


# ---------------------------------------------------------------------------------- VOC detection
@pytest.fixture(scope="module")
def voc_det_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vocdet") / "vocdet"
    write_voc_det_fixture(root, n=3, size=(24, 32), num_classes=3)
    return root


XML_TEXT = st.sampled_from(["", "-5", "0", "1e3", "nan", "inf", "12.7", "40", "1", "2", "aeroplane", "cat", "x",
                            " 3 "]) | st.text(max_size=6)


@settings(max_examples=60, **FUZZ)
@given(data=st.data())
def test_voc_detection_xml(voc_det_template, data):
    root = copy_of(voc_det_template)
    xml = data.draw(st.sampled_from(sorted((root / "Annotations").glob("*.xml"))))
    how = data.draw(st.sampled_from(["text", "text", "drop", "dup", "garbage", "split"]))
    if how == "garbage":
        xml.write_bytes(data.draw(st.binary(max_size=80) | st.sampled_from(
            [b"<annotation>", b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx">]><annotation>&x;&x;'
                              b"</annotation>"])))
    elif how == "split":
        edit_split_list(data, root / "ImageSets/Main/train.txt")
    else:
        tree = ET.parse(xml)
        nodes = [n for n in tree.getroot().iter() if n is not tree.getroot()]
        node = data.draw(st.sampled_from(nodes))
        parent = next(p for p in tree.getroot().iter() if node in list(p))
        if how == "text":
            node.text = data.draw(XML_TEXT)
        elif how == "drop":
            parent.remove(node)
        else:
            parent.append(node)
        tree.write(xml, encoding="unicode")
    cfg = {"layout": "voc", "root": str(root), "image_size": 16, "classes": ["aeroplane", "bicycle", "bird"]}
    out = loads_or_fails_clearly(lambda: build_det_data(cfg, source="fuzz.py", log=lambda *_: None), root)
    if out is not None:
        check_det(out)
