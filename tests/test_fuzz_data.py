"""Fuzzing datasets (issue 16): VOC / Cityscapes segmentation folders, COCO JSON and VOC XML detection
annotations, BSD500 / Rain100 image folders and the proxy sets' manifests, each mutated at random from a
valid tiny fixture (``densenas.datasets.fixtures``, ``det_fixtures``, ``restore_fixtures``).

Each search's data builder (``tasks/*/data.py``) either loads the data -- and then what it loaded is sound:
finite images, labels within the classes or the ignore index, boxes inside the images -- or raises
``FileNotFoundError`` / ``ValueError`` whose message names the offending file (or the config key), never
a ``KeyError`` / ``TypeError`` / ``IndexError`` / numpy error from inside a reader.

Images are at most 32 px and 2-4 per split. Hypothesis runs derandomized without an example database.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from densenas.datasets.det_fixtures import write_coco_fixture, write_voc_det_fixture
from densenas.datasets.fixtures import write_cityscapes_fixture, write_voc_fixture
from densenas.datasets.imagefolder import build_proxy_restoration
from densenas.datasets.proxy import build_proxy_voc
from densenas.datasets.proxy_det import build_proxy_coco
from densenas.datasets.restore_fixtures import write_bsd_fixture, write_rain100_fixture
from densenas.datasets.segfolder import IGNORE_INDEX, SegmentationFolder
from densenas.tasks.detection.data import build_det_data
from densenas.tasks.restoration.task import RestorationTask
from densenas.tasks.segmentation.data import build_data as build_seg_data

pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning",
                                        "ignore:Truncated File Read:UserWarning")
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                   HealthCheck.data_too_large])
#: what Python / numpy say when a bad value reaches code that never expected it
DEEP = ("unhashable type", "object has no attribute", "not subscriptable", "is not iterable",
        "index out of range", "not supported between instances", "unsupported operand",
        "unexpected keyword argument", "invalid literal for", "cannot reshape", "could not broadcast",
        "object is not callable", "string indices must be integers")


def loads_or_fails_clearly(build: Callable[[], Any], root: Path, keys: tuple[str, ...] = ()) -> Any:
    """``build()``'s value, or ``None`` after checking its error is a clear one (names a file under
    ``root`` or one of the config ``keys``)."""
    try:
        return build()
    except (FileNotFoundError, ValueError) as e:
        msg = str(e)
        assert not any(p in msg for p in DEEP), f"{type(e).__name__} from inside: {msg}"
        assert str(root) in msg or any(k in msg for k in keys), \
            f"{type(e).__name__} names no file under {root} nor a key of {keys}: {msg}"
        return None


_COPIES: list[Path] = []
# hundreds of tiny folders are copied and removed: in memory where there is a tmpfs (10x faster than disk)
_SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def copy_of(template: Path) -> Path:
    """A fresh copy of a fixture folder for one example (the previous example's copy is removed)."""
    while _COPIES:
        shutil.rmtree(_COPIES.pop(), ignore_errors=True)
    d = Path(tempfile.mkdtemp(prefix="fuzz_data_", dir=_SCRATCH))
    _COPIES.append(d)
    shutil.copytree(template, d / "root")
    return d / "root"


@pytest.fixture(scope="module", autouse=True)
def _remove_copies():
    yield
    while _COPIES:
        shutil.rmtree(_COPIES.pop(), ignore_errors=True)


# ------------------------------------------------------------------------------------- image files
MODES = ("P", "L", "I;16", "RGB", "RGBA", "1", "LA", "CMYK", "I", "F")


@st.composite
def image_bytes(draw: st.DrawFn, shape: tuple[int, int] = (24, 32), values: st.SearchStrategy[int] | None = None
                ) -> bytes:
    """An image file of a random mode and size (PNG, or TIFF for modes PNG cannot hold; mostly of the
    fixture's ``shape``, so that the other checks are reached), a truncated one, or random bytes."""
    kind = draw(st.sampled_from(["image", "image", "image", "truncated", "garbage"]))
    if kind == "garbage":
        return draw(st.binary(max_size=64))
    mode = draw(st.sampled_from(MODES))
    h, w = shape if draw(st.integers(0, 3)) else (draw(st.integers(1, 32)), draw(st.integers(1, 32)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    hi = {"1": 2, "I;16": 70000, "I": 2**31 - 1, "F": 300}.get(mode, 256)
    lo = -300 if mode in ("I", "F") else 0
    if values is not None and mode in ("P", "L", "I;16", "I"):
        arr = np.full((h, w), draw(values)) if draw(st.booleans()) else rng.integers(0, 4, (h, w))
    else:
        arr = rng.integers(lo, min(hi, 65536), (h, w))
    chans = {"RGB": 3, "RGBA": 4, "LA": 2, "CMYK": 4}.get(mode)
    if chans:
        img = Image.frombytes(mode, (w, h), rng.integers(0, 256, (h, w, chans), dtype=np.uint8).tobytes())
    elif mode in ("I", "F"):
        img = Image.fromarray(arr.astype(np.int32 if mode == "I" else np.float32))
    elif mode == "I;16":
        img = Image.frombytes("I;16", (w, h), np.clip(arr, 0, 65535).astype("<u2").tobytes())
    elif mode == "1":
        img = Image.fromarray((arr % 2).astype(bool))
    else:  # "P" (palette indices) or "L"
        img = Image.frombytes(mode, (w, h), np.clip(arr, 0, 255).astype(np.uint8).tobytes())
    buf = io.BytesIO()
    img.save(buf, format="TIFF" if mode in ("CMYK", "I", "F") else "PNG")
    data = buf.getvalue()
    return data[:draw(st.integers(0, len(data) - 1))] if kind == "truncated" else data


# ------------------------------------------------------------------------------ VOC segmentation
@pytest.fixture(scope="module")
def voc_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc") / "voc"
    write_voc_fixture(root, n=4, size=(24, 32), num_classes=3)
    return root


SPLIT_EDITS = ("drop", "extra", "duplicate", "blank", "empty", "garbage", "traversal", "spaces")


def edit_split_list(data: st.DataObject, path: Path) -> None:
    ids = path.read_text().split()
    how = data.draw(st.sampled_from(SPLIT_EDITS))
    if how == "drop" and ids:
        ids.pop(data.draw(st.integers(0, len(ids) - 1)))
    elif how == "extra":
        ids.append(data.draw(st.sampled_from(["2007_999999", "missing", "x.jpg"]) | st.text(min_size=1, max_size=8)))
    elif how == "duplicate" and ids:
        ids.append(ids[0])
    elif how == "blank":
        ids = ["", "   ", *ids, "\t"]
    elif how == "empty":
        ids = []
    elif how == "traversal":
        ids.append("../JPEGImages/" + (ids[0] if ids else "x"))
    elif how == "spaces" and ids:
        ids = [f"{i} 1" for i in ids]  # VOC's Main/<class>_train.txt style: "<id> <flag>"
    else:
        path.write_bytes(data.draw(st.binary(max_size=40)))
        return
    path.write_text("\n".join(ids) + "\n")


def check_seg(out: Any, num_classes: int) -> None:
    (xt, yt), (xv, yv) = out.train, out.val
    for x, y in ((xt, yt), (xv, yv)):
        assert x.ndim == 4 and x.shape[1] == 3 and y.shape == (x.shape[0], *x.shape[2:])
        assert bool(torch.isfinite(x).all())
        bad = (y >= num_classes) & (y != IGNORE_INDEX) | (y < 0)
        assert not bool(bad.any())


@settings(max_examples=100, **FUZZ)
@given(data=st.data())
def test_voc_segmentation_folder(voc_template, data):
    root = copy_of(voc_template)
    ids = (root / "ImageSets/Segmentation/trainval.txt").read_text().split()
    cfg: dict[str, Any] = {"layout": "voc", "root": str(root), "image_size": 16, "num_classes": 3}
    keys: tuple[str, ...] = ()
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["label", "label", "image", "split", "delete", "manifest", "cfg"]))
        i = data.draw(st.sampled_from(ids))
        if what == "label":
            (root / f"SegmentationClass/{i}.png").write_bytes(
                data.draw(image_bytes(values=st.sampled_from([0, 1, 2, 3, 7, 254, 255, 256, 1000]))))
        elif what == "image":
            (root / f"JPEGImages/{i}.jpg").write_bytes(data.draw(image_bytes()))
        elif what == "split":
            edit_split_list(data, root / f"ImageSets/Segmentation/{data.draw(st.sampled_from(['train', 'val']))}.txt")
        elif what == "delete":
            (root / data.draw(st.sampled_from([f"SegmentationClass/{i}.png", f"JPEGImages/{i}.jpg"]))).unlink(
                missing_ok=True)
        elif what == "manifest":
            (root / "densenas_proxy.json").write_text(json.dumps(data.draw(MANIFEST_JUNK)))
        else:
            key = data.draw(st.sampled_from(["num_classes", "image_size", "max_train", "max_val", "train_split"]))
            cfg[key] = data.draw(st.integers(-2, 300) | st.sampled_from(["2", None, "../x", 2.5]))
            keys += (key,)
    out = loads_or_fails_clearly(lambda: build_seg_data(cfg, source="fuzz.py", log=lambda *_: None), root, keys)
    if out is not None:
        check_seg(out, out.num_classes)


@pytest.fixture(scope="module")
def cityscapes_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cs") / "cs"
    write_cityscapes_fixture(root, n=2, size=(16, 32), trainids=False)
    return root


@settings(max_examples=15, **FUZZ)
@given(data=st.data())
def test_cityscapes_label_ids(cityscapes_template, data):
    """labelIds PNGs of random values / modes / sizes (mapped to trainIds by the reader)."""
    root = copy_of(cityscapes_template)
    labels = sorted(root.glob("gtFine/*/*/*_gtFine_labelIds.png"))
    target = data.draw(st.sampled_from(labels))
    target.write_bytes(data.draw(image_bytes(shape=(16, 32), values=st.integers(0, 300))))
    cfg = {"layout": "cityscapes", "root": str(root), "image_size": 16}
    out = loads_or_fails_clearly(lambda: build_seg_data(cfg, source="fuzz.py", log=lambda *_: None), root)
    if out is not None:
        check_seg(out, 19)


# --------------------------------------------------------------------------------- COCO detection
@pytest.fixture(scope="module")
def coco_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco") / "coco"
    write_coco_fixture(root, n=4, size=(24, 32), num_classes=3)
    return root


JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 100) | st.floats() | st.text(max_size=6),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                    max_leaves=8)


def mutate_json(data: st.DataObject, doc: Any, depth: int = 0) -> Any:
    """One random change somewhere in a JSON document: drop, replace or add a member / element."""
    if isinstance(doc, dict) and doc and (depth == 0 or data.draw(st.booleans())):
        key = data.draw(st.sampled_from(sorted(doc)))
        how = data.draw(st.sampled_from(["into", "into", "into", "drop", "replace", "add"]))
        if how == "into" and isinstance(doc[key], (dict, list)) and doc[key]:
            doc[key] = mutate_json(data, doc[key], depth + 1)
        elif how == "drop":
            del doc[key]
        elif how == "add":
            doc[data.draw(st.text(max_size=6))] = data.draw(JSON)
        else:
            doc[key] = data.draw(JSON)
        return doc
    if isinstance(doc, list) and doc:
        i = data.draw(st.integers(0, len(doc) - 1))
        how = data.draw(st.sampled_from(["into", "into", "drop", "replace", "dup"]))
        if how == "into" and isinstance(doc[i], (dict, list)):
            doc[i] = mutate_json(data, doc[i], depth + 1)
        elif how == "drop":
            doc.pop(i)
        elif how == "dup":
            doc.append(json.loads(json.dumps(doc[i])))
        else:
            doc[i] = data.draw(JSON)
        return doc
    return data.draw(JSON)


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


# ------------------------------------------------------------------------- restoration folders
@pytest.fixture(scope="module")
def rain_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rain") / "rain"
    for split in ("train", "val"):
        write_rain100_fixture(root, n=2, size=(16, 24), split=split, layout="subfolders")
    write_bsd_fixture(root, counts={"train": 2, "val": 2}, size=(16, 24))
    return root


@settings(max_examples=60, **FUZZ)
@given(data=st.data(), kind=st.sampled_from(["derain", "denoise"]))
def test_image_folder_pairs(rain_template, data, kind):
    """Rain100 pairs (mismatched names and sizes, missing partners, junk files) and BSD500 folders."""
    root = copy_of(rain_template)
    files = sorted(p for p in root.rglob("*.*") if p.is_file())
    for _ in range(data.draw(st.integers(1, 3))):
        f = data.draw(st.sampled_from(files))
        if not f.exists():
            continue
        how = data.draw(st.sampled_from(["replace", "rename", "delete", "junk", "dir"]))
        if how == "replace":
            f.write_bytes(data.draw(image_bytes(shape=(16, 24))))
        elif how == "rename":
            f.rename(f.with_name(data.draw(st.sampled_from(["rain-1.png", "9.png", "x.PNG", "1.jpg", "a b.png"]))))
        elif how == "delete":
            f.unlink()
        elif how == "junk":
            (f.parent / data.draw(st.sampled_from(["notes.txt", "z.png", ".hidden.png", "Thumbs.db"]))).write_bytes(
                data.draw(st.binary(max_size=20)))
        else:
            (f.parent / "folder.png").mkdir(exist_ok=True)
    task = RestorationTask(kind=kind)
    cfg = {"layout": "rain100" if kind == "derain" else "bsd", "root": str(root), "image_size": 12}
    loads_or_fails_clearly(lambda: task.build_data(cfg, source="fuzz.py", log=lambda *_: None), root)
    if task.train is not None:  # loaded
        for degraded, clean in (task.train, task.val):
            assert degraded.shape == clean.shape and degraded.shape[1:] == (3, 12, 12)
            assert bool(torch.isfinite(degraded).all() and (clean >= 0).all() and (clean <= 1).all())


# ------------------------------------------------------------------------------ proxy manifests
MANIFEST_JUNK = JSON | st.sampled_from([{"classes": 5}, {"classes": [1, 2]}, {"classes": []}, {"classes": None},
                                        [], "classes", {"splits": {"train": "x"}}])
PROXIES: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "voc": ("densenas_proxy.json", lambda r: build_proxy_voc(r, num_train=2, num_val=1, size=32, num_classes=2)),
    "coco": ("densenas_proxy_coco.json",
             lambda r: build_proxy_coco(r, num_train=2, num_val=1, size=32, num_classes=2, log=None)),
    "restoration": ("densenas_restoration.json",
                    lambda r: build_proxy_restoration(r, num_train=2, num_val=1, size=16, rain=True)),
}


@pytest.fixture(scope="module")
def proxy_templates(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name, (_, build) in PROXIES.items():
        out[name] = tmp_path_factory.mktemp(name) / name
        build(out[name])
    return out


@pytest.mark.parametrize("name", sorted(PROXIES))
@settings(max_examples=15, **FUZZ)
@given(data=st.data(), junk=st.booleans())
def test_proxy_manifest(proxy_templates, name, data, junk):
    """A mutated or garbage manifest: the proxy builder rebuilds (or reuses) the set, or says which file is
    wrong; the rebuilt set then reads back (segmentation: its classes through SegmentationFolder)."""
    root = copy_of(proxy_templates[name])
    manifest_name, build = PROXIES[name]
    path = root / manifest_name
    doc = data.draw(MANIFEST_JUNK) if junk else mutate_json(data, json.loads(path.read_text()))
    path.write_text(json.dumps(doc))
    got = loads_or_fails_clearly(lambda: build(root), root)
    if got is not None and name == "voc":
        folder = SegmentationFolder(root, "train", "voc")
        assert folder.num_classes == len(got["classes"]) == 3
        assert folder[0][1].max() < 3 or folder[0][1].max() == IGNORE_INDEX


@settings(max_examples=25, **FUZZ)
@given(doc=MANIFEST_JUNK)
def test_segmentation_folder_reads_a_foreign_manifest(voc_template, doc):
    """SegmentationFolder takes class names from a densenas_proxy.json in the root: a damaged one is a
    ValueError naming it."""
    root = copy_of(voc_template)
    (root / "densenas_proxy.json").write_text(json.dumps(doc))
    folder = loads_or_fails_clearly(lambda: SegmentationFolder(root, "train", "voc", num_classes=3), root)
    if folder is not None:
        assert len(folder.classes) == 3 and all(isinstance(c, str) for c in folder.classes)
