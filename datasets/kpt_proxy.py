"""A deterministic proxy keypoint dataset made from real photographs, in the COCO keypoint layout.

No keypoint benchmark (COCO, MPII) can be downloaded here, so the keypoint search of densenas (after the
transfer experiments of Nekrasov et al., "Fast Neural Architecture Search of Compact Semantic Segmentation
Models via Auxiliary Cells", CVPR 2019) trains on scenes we draw ourselves, with keypoints that are exact
because we placed them. Each image is a mosaic of real photographs (``skimage.data``, sklearn's sample
images, matplotlib's ``sample_data``; see :mod:`densenas.datasets.proxy`) with one or two front-facing
articulated figures on top: a human-like skeleton of :data:`KEYPOINT_NAMES` (14 joints) with random but
plausible joint angles, limbs drawn as thick capsules, a quadrilateral torso and an elliptic head, every
part filled with a crop of a real photograph. Some figures get a real-texture occluder over one of their
joints; a joint covered by an occluder or by a later figure is labelled ``v=1`` (labelled, not visible),
every other joint ``v=2``. The person's right side is on the image's left (the figure faces the camera),
so a horizontal flip with the left/right pairs swapped is again a valid sample, as for real people.

Head size for PCKh (MPII's definition, as mmpose's ``MpiiDataset`` computes it from ``mpii_gt_val.mat``):
``0.6 * ||(w, h)||`` of the head's bounding box, here the tight box of the drawn head ellipse; stored per
annotation as ``head_size`` (and the box as ``head_box``, ``[x1, y1, x2, y2]``).

Output (the layout of mmpose's ``CocoDataset``)::

    root/annotations/person_keypoints_{train,val}2017.json   # COCO keypoints: [x, y, v] * K, bbox, area
    root/{train,val}2017/<id>.jpg
    root/metainfo.py          # mmpose dataset_info: keypoint_info, skeleton_info, joint_weights, sigmas
    root/densenas_proxy_kpt.json   # manifest: build parameters, sources, counts

A keypoint's ``(x, y)`` is in pixel coordinates with pixel centres at integers (mmpose's and cv2's
convention); ``bbox`` is the tight box ``[x, y, w, h]`` of the whole drawn figure and ``area`` its pixel
count (occluded pixels included).
"""
from __future__ import annotations

import json
import math
import pprint
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageDraw

from .proxy import BACKGROUND_SOURCES, CLASS_SOURCES, background_mosaic, load_source_images, prepare_source, \
    random_crop, read_manifest

__all__ = ["KEYPOINT_NAMES", "FLIP_PAIRS", "SKELETON", "SIGMAS", "JOINT_WEIGHTS", "MANIFEST_NAME",
           "build_proxy_kpt", "dataset_info", "render_scene", "iter_scenes", "head_size"]

MANIFEST_NAME = "densenas_proxy_kpt.json"
METAINFO_NAME = "metainfo.py"
FORMAT_VERSION = 1
DATASET_NAME = "densenas_proxy_kpt"
KEYPOINT_NAMES: tuple[str, ...] = (
    "head_top", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle")
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13))
SKELETON: tuple[tuple[int, int], ...] = ((0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (2, 8), (5, 11),
                                         (8, 11), (8, 9), (9, 10), (11, 12), (12, 13))
# OKS sigmas: COCO's for the same body parts (head_top ~ an eye, neck ~ an ear)
SIGMAS: tuple[float, ...] = (0.025, 0.035, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107, 0.087, 0.089,
                             0.107, 0.087, 0.089)
JOINT_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 1.0, 1.2, 1.5, 1.0, 1.2, 1.5, 1.0, 1.2, 1.5, 1.0, 1.2, 1.5)
MPII_HEAD_BIAS = 0.6  # MPII's SC_BIAS: head size = 0.6 * head-box diagonal
# Part textures come from the segmentation proxy's class photographs; backgrounds and occluders from its
# background photographs (disjoint sets).
TEXTURE_SOURCES: tuple[str, ...] = tuple(k for _, k in CLASS_SOURCES)


def dataset_info() -> dict[str, Any]:
    """The mmpose ``dataset_info`` of the proxy set (what ``metainfo.py`` holds)."""
    swap = {a: b for a, b in FLIP_PAIRS} | {b: a for a, b in FLIP_PAIRS}
    keypoint_info = {i: dict(name=n, id=i, color=[255, 128, 0] if "left" in n else [0, 255, 0] if "right" in n
                             else [51, 153, 255], type="lower" if i >= 8 else "upper",
                             swap=KEYPOINT_NAMES[swap[i]] if i in swap else "")
                     for i, n in enumerate(KEYPOINT_NAMES)}
    skeleton_info = {i: dict(link=(KEYPOINT_NAMES[a], KEYPOINT_NAMES[b]), id=i, color=[51, 153, 255])
                     for i, (a, b) in enumerate(SKELETON)}
    return dict(dataset_name=DATASET_NAME, paper_info=dict(title="densenas proxy keypoint set"),
                keypoint_info=keypoint_info, skeleton_info=skeleton_info, joint_weights=list(JOINT_WEIGHTS),
                sigmas=list(SIGMAS))


def head_size(box: tuple[float, float, float, float] | list[float]) -> float:
    """MPII's head size of a head box ``[x1, y1, x2, y2]``: ``0.6 * ||(x2 - x1, y2 - y1)||``."""
    return MPII_HEAD_BIAS * math.hypot(box[2] - box[0], box[3] - box[1])


# ---------------------------------------------------------------------------------------- figure geometry
def _rot(v: np.ndarray, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _skeleton(rng: np.random.Generator, height: float) -> np.ndarray:
    """The 14 joints (``K x 2``, pelvis at the origin, y down) of a front-facing figure ``height`` tall.

    Proportions are roughly human (torso 0.30, upper arm 0.16, forearm 0.14, thigh 0.23, shin 0.22 of the
    height); arm abduction -20..150 deg and elbow bend -30..120 deg, leg abduction -10..40 deg and knee bend
    -30..30 deg, drawn independently per side; a whole-body tilt of +-15 deg."""
    h = height
    j = np.zeros((len(KEYPOINT_NAMES), 2))
    neck = np.array([0.0, -0.30 * h])
    j[1] = neck
    j[0] = neck + _rot(np.array([0.0, -0.15 * h]), math.radians(rng.uniform(-15, 15)))
    for side, (sh, el, wr, hip, kn, an) in ((-1, (2, 3, 4, 8, 9, 10)), (1, (5, 6, 7, 11, 12, 13))):
        # side -1: the person's right, on the image's left
        j[sh] = neck + np.array([side * 0.11 * h, 0.02 * h])
        a = math.radians(rng.uniform(-20, 150))
        b = a + math.radians(rng.uniform(-30, 120))
        j[el] = j[sh] + 0.16 * h * np.array([side * math.sin(a), math.cos(a)])
        j[wr] = j[el] + 0.14 * h * np.array([side * math.sin(b), math.cos(b)])
        j[hip] = np.array([side * 0.075 * h, 0.0])
        a = math.radians(rng.uniform(-10, 40))
        b = a + math.radians(rng.uniform(-30, 30))
        j[kn] = j[hip] + 0.23 * h * np.array([side * math.sin(a), math.cos(a)])
        j[an] = j[kn] + 0.22 * h * np.array([side * math.sin(b), math.cos(b)])
    tilt = math.radians(rng.uniform(-15, 15))
    return np.stack([_rot(p, tilt) for p in j])


def _capsule(draw: ImageDraw.ImageDraw, a: np.ndarray, b: np.ndarray, width: float) -> None:
    r = width / 2
    draw.line([tuple(a), tuple(b)], fill=1, width=max(1, round(width)))
    for p in (a, b):
        draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=1)


def _figure_parts(joints: np.ndarray, height: float, size: int) -> tuple[list[tuple[np.ndarray, int]], np.ndarray]:
    """Masks of the figure's parts in drawing order with their texture slot (0 clothes, 1 legs, 2 skin), and
    the head box ``[x1, y1, x2, y2]``."""
    h = height
    parts: list[tuple[np.ndarray, int]] = []

    def new() -> tuple[Image.Image, ImageDraw.ImageDraw]:
        m = Image.new("L", (size, size), 0)
        return m, ImageDraw.Draw(m)

    for hip, kn, an in ((8, 9, 10), (11, 12, 13)):  # legs first (the torso covers the hips' tops)
        m, d = new()
        _capsule(d, joints[hip], joints[kn], 0.08 * h)
        _capsule(d, joints[kn], joints[an], 0.07 * h)
        parts.append((np.asarray(m, bool), 1))
    m, d = new()
    d.polygon([tuple(joints[i]) for i in (2, 5, 11, 8)], fill=1)
    _capsule(d, joints[2], joints[8], 0.05 * h)
    _capsule(d, joints[5], joints[11], 0.05 * h)
    _capsule(d, joints[1], joints[0], 0.05 * h)  # neck
    parts.append((np.asarray(m, bool), 0))
    for sh, el, wr in ((2, 3, 4), (5, 6, 7)):
        m, d = new()
        _capsule(d, joints[sh], joints[el], 0.06 * h)
        parts.append((np.asarray(m, bool), 0))
        m, d = new()
        _capsule(d, joints[el], joints[wr], 0.05 * h)
        parts.append((np.asarray(m, bool), 2))
    # the head: an ellipse along neck -> head_top, centred 60 % of the way, reaching past head_top
    m, d = new()
    axis = joints[0] - joints[1]
    length = float(np.linalg.norm(axis))
    c = joints[1] + 0.6 * axis
    ry, rx = 0.55 * length, 0.4 * length
    ang = math.atan2(axis[0], -axis[1])
    poly = [tuple(c + _rot(np.array([rx * math.cos(t), ry * math.sin(t)]), ang))
            for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)]
    d.polygon(poly, fill=1)
    head = np.asarray(m, bool)
    parts.append((head, 2))
    ys, xs = np.nonzero(head)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
    return parts, box


def render_scene(rng: np.random.Generator, textures: list[Image.Image], bgs: list[Image.Image], size: int
                 ) -> tuple[np.ndarray, list[dict[str, Any]], np.ndarray]:
    """One image with 1-2 figures.

    Returns:
        ``(image HxWx3 uint8, figures, owner)``: per figure ``keypoints`` (``K x 2`` float, image
        coordinates), ``visible`` (``K`` ints, 2 visible / 1 occluded), ``bbox`` (xywh), ``area``,
        ``head_box`` and ``head_size``; ``owner`` is the ``H x W`` int map of what was drawn last at each
        pixel (``-1`` background, ``i`` figure ``i``, ``-2`` an occluder).
    """
    k = len(KEYPOINT_NAMES)
    while True:
        img = background_mosaic(rng, bgs, size)
        owner = np.full((size, size), -1, np.int16)
        n = 1 if rng.uniform() < 0.5 else 2
        figs: list[dict[str, Any]] = []
        for i in range(n):
            height = rng.uniform(0.45, 0.85) * size
            for _ in range(50):  # place the figure so that every joint (and most of it) is inside
                joints = _skeleton(rng, height) + rng.uniform(0.1, 0.9, 2) * size
                lo, hi = joints.min(0), joints.max(0)
                if (lo >= 0.04 * size).all() and (hi <= 0.96 * size - 1).all():
                    break
            else:
                continue
            parts, hbox = _figure_parts(joints, height, size)
            slots = [textures[int(rng.integers(0, len(textures)))] for _ in range(3)]
            full = np.zeros((size, size), bool)
            for mask, slot in parts:
                img[mask] = random_crop(rng, slots[slot], size, size)[mask]
                owner[mask] = i
                full |= mask
            ys, xs = np.nonzero(full)
            figs.append(dict(keypoints=joints, bbox=[float(xs.min()), float(ys.min()),
                                                     float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())],
                             area=float(full.sum()), head_box=hbox.tolist(), head_size=head_size(hbox)))
            if rng.uniform() < 0.6:  # a real-texture occluder over one joint
                c = joints[int(rng.integers(0, k))] + rng.uniform(-0.05, 0.05, 2) * height
                r = rng.uniform(0.06, 0.14, 2) * height
                m = Image.new("L", (size, size), 0)
                shape = ImageDraw.Draw(m)
                box = [c[0] - r[0], c[1] - r[1], c[0] + r[0], c[1] + r[1]]
                (shape.ellipse if rng.uniform() < 0.5 else shape.rectangle)(box, fill=1)
                mask = np.asarray(m, bool)
                img[mask] = random_crop(rng, bgs[int(rng.integers(0, len(bgs)))], size, size)[mask]
                owner[mask] = -2
        if not figs:
            continue
        ok = True
        for i, f in enumerate(figs):
            px = np.clip(np.rint(f["keypoints"]).astype(int), 0, size - 1)
            f["visible"] = np.where(owner[px[:, 1], px[:, 0]] == i, 2, 1).astype(int)
            ok &= int((f["visible"] == 2).sum()) >= k // 2  # at least half of every figure's joints visible
        if ok:
            return img, figs, owner


# ---------------------------------------------------------------------------------------------- writing
def _complete(root: Path, manifest: dict[str, Any]) -> bool:
    """Whether the annotation files, metainfo and every image the manifest counts exist."""
    if not (root / METAINFO_NAME).is_file():
        return False
    for split, count in (manifest.get("splits") or {}).items():
        ann = root / "annotations" / f"person_keypoints_{split}2017.json"
        try:
            images = json.loads(ann.read_text())["images"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if len(images) != count or not all((root / f"{split}2017" / im["file_name"]).is_file() for im in images):
            return False
    return True


def _sources() -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    loaded = load_source_images(TEXTURE_SOURCES + BACKGROUND_SOURCES)
    tex_keys = [k for k in TEXTURE_SOURCES if k in loaded]
    bg_keys = [k for k in BACKGROUND_SOURCES if k in loaded]
    if not tex_keys or not bg_keys:
        raise RuntimeError(f"no texture ({TEXTURE_SOURCES}) or background ({BACKGROUND_SOURCES}) photograph "
                           f"could be loaded offline")
    return tex_keys, bg_keys, loaded


def iter_scenes(count: int, size: int, seed: int) -> Iterator[tuple[np.ndarray, list[dict[str, Any]], np.ndarray]]:
    """The ``count`` scenes (:func:`render_scene`) of a build with ``size`` and ``seed``, in file order
    (train images first): what :func:`build_proxy_kpt` writes, to replay in tests."""
    tex_keys, bg_keys, loaded = _sources()
    textures = [prepare_source(loaded[k], k, size) for k in tex_keys]
    bgs = [prepare_source(loaded[k], k, size) for k in bg_keys]
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield render_scene(rng, textures, bgs, size)


def build_proxy_kpt(root: str | Path = "data/proxy_kpt", num_train: int = 64, num_val: int = 24, size: int = 160,
                    seed: int = 0, force: bool = False) -> dict[str, Any]:
    """Build (or reuse) the proxy keypoint set under ``root`` in the COCO keypoint layout.

    Idempotent: when the manifest records the same parameters and sources and every file exists, nothing
    is written; otherwise the set is regenerated (the same seed gives the same annotations).

    Args:
        root: output folder.
        num_train: training images.
        num_val: validation images.
        size: side of the square images in pixels (>= 64).
        seed: scene seed.
        force: regenerate even when the manifest matches.

    Returns:
        The manifest (also written to ``root/densenas_proxy_kpt.json``).

    Raises:
        ValueError: bad counts or size.
        RuntimeError: no texture or background photograph loads offline.
    """
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise ValueError(f"need num_train >= 0, num_val >= 0 and some images, got {num_train}, {num_val}")
    if size < 64:
        raise ValueError(f"size must be >= 64 pixels, got {size}")
    root = Path(root)
    tex_keys, bg_keys, _ = _sources()
    params = dict(num_train=num_train, num_val=num_val, size=size, seed=seed)
    manifest: dict[str, Any] = dict(format="densenas_proxy_kpt", version=FORMAT_VERSION, params=params,
                                    keypoints=list(KEYPOINT_NAMES), texture_sources=tex_keys,
                                    background_sources=bg_keys, splits={"train": num_train, "val": num_val},
                                    layout="coco", metainfo=METAINFO_NAME,
                                    head_size="0.6 * diagonal of the head ellipse's box (MPII SC_BIAS)")
    old = read_manifest(root, MANIFEST_NAME)
    if not force and old is not None and _complete(root, old) and all(
            old.get(k) == manifest[k] for k in ("format", "version", "params", "keypoints", "texture_sources",
                                                "background_sources")):
        return old
    (root / MANIFEST_NAME).unlink(missing_ok=True)  # written last: a crash leaves no valid manifest
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    scenes = iter_scenes(num_train + num_val, size, seed)
    category = dict(id=1, name="person", supercategory="person", keypoints=list(KEYPOINT_NAMES),
                    skeleton=[[a + 1, b + 1] for a, b in SKELETON])  # COCO's skeleton is 1-based
    img_id, ann_id, persons = 0, 0, {}
    for split, count in (("train", num_train), ("val", num_val)):
        folder = root / f"{split}2017"
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.jpg"):
            stale.unlink()
        images, anns = [], []
        for _ in range(count):
            img_id += 1
            img, figs, _ = next(scenes)
            name = f"{img_id:012d}.jpg"
            Image.fromarray(img).save(folder / name, format="JPEG", quality=92)
            images.append(dict(id=img_id, file_name=name, width=size, height=size))
            for f in figs:
                ann_id += 1
                kp = [v for (x, y), vis in zip(f["keypoints"], f["visible"])
                      for v in (round(float(x), 3), round(float(y), 3), int(vis))]
                anns.append(dict(id=ann_id, image_id=img_id, category_id=1, keypoints=kp,
                                 num_keypoints=len(KEYPOINT_NAMES), bbox=f["bbox"], area=f["area"], iscrowd=0,
                                 head_box=f["head_box"], head_size=round(f["head_size"], 4)))
        persons[split] = len(anns)
        (root / "annotations" / f"person_keypoints_{split}2017.json").write_text(json.dumps(
            dict(info=dict(description="densenas proxy keypoint set", params=params), images=images,
                 annotations=anns, categories=[category])))
    (root / METAINFO_NAME).write_text(
        "# mmpose dataset_info of the densenas proxy keypoint set (datasets/kpt_proxy.py)\n"
        f"dataset_info = {pprint.pformat(dataset_info(), sort_dicts=False)}\n")
    manifest["persons"] = persons
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
