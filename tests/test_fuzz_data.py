"""Fuzzing datasets (issue 16): VOC / Cityscapes segmentation folders, BSD500 / Rain100 image folders and
the proxy sets' manifests (detection annotations: ``test_fuzz_det_data.py``), each mutated at random from a
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
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from _fuzz import _remove_copies  # noqa: F401  (autouse: removes this module's scratch copies)
from _fuzz import FUZZ, JSON, copy_of, edit_split_list, loads_or_fails_clearly, mutate_json
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from densenas.datasets.fixtures import write_cityscapes_fixture, write_voc_fixture
from densenas.datasets.imagefolder import build_proxy_restoration
from densenas.datasets.proxy import build_proxy_voc
from densenas.datasets.proxy_det import build_proxy_coco
from densenas.datasets.restore_fixtures import write_bsd_fixture, write_rain100_fixture
from densenas.datasets.segfolder import IGNORE_INDEX, SegmentationFolder
from densenas.tasks.restoration.task import RestorationTask
from densenas.tasks.segmentation.data import build_data as build_seg_data

pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning",
                                        "ignore:Truncated File Read:UserWarning")

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
