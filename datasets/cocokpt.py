"""Readers of the COCO keypoint and MPII layouts as mmpose 1.x reads them, and the top-down person crops.

Layouts (the ones of mmpose's ``CocoDataset`` and ``MpiiDataset`` configs):

* COCO: ``root/annotations/person_keypoints_{split}2017.json`` (images, annotations with ``keypoints``
  ``[x, y, v] * K``, ``bbox`` ``[x, y, w, h]``, ``area``, ``iscrowd``; categories with the keypoint names)
  and ``root/{split}2017/<file_name>``; the proxy set of :mod:`densenas.datasets.kpt_proxy` adds a
  ``head_size`` per annotation.
* MPII: ``root/annotations/mpii_{split}.json`` (a list of ``{image, center, scale, joints, joints_vis}``),
  ``root/images/<image>`` and, for PCKh, ``root/annotations/mpii_gt_val.mat`` (``headboxes_src``, read with
  scipy.io; head size ``0.6 * ||box diagonal||`` as mmpose's ``MpiiDataset``).

Every reader returns one :class:`PersonInstance` per annotated person (crowd and keypoint-less COCO
annotations are skipped, as mmpose's top-down datasets do) and checks what it reads: an error names the
file, the annotation and the field (a keypoint outside its image, a keypoints array whose length is not
``3 * K``, a missing visibility flag, an unknown image id).

:func:`crop_persons` cuts the top-down inputs exactly as mmpose's ``GetBBoxCenterScale`` (padding 1.25) and
``TopdownAffine`` (box widened to the input aspect ratio, ``get_warp_matrix``, ``cv2.warpAffine``) do.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

__all__ = ["KeypointFormatError", "PersonInstance", "read_coco_keypoints", "read_mpii", "crop_persons",
           "coco_paths", "mpii_paths"]

PIXEL_STD = 200.0  # MPII's scale unit (mmpose MpiiDataset)
MPII_HEAD_BIAS = 0.6


class KeypointFormatError(ValueError):
    """A keypoint annotation file that does not follow its layout (the message names file and field)."""


@dataclass
class PersonInstance:
    """One annotated person: what the crops, the heatmap targets and the metrics need.

    Attributes:
        img_path: the image file.
        img_id, ann_id: COCO ids (MPII: the image number and the annotation's index).
        width, height: image size in pixels.
        keypoints: ``K x 2`` float32 image coordinates.
        visible: ``K`` int visibility flags (0 unlabelled, 1 labelled but occluded, 2 visible).
        bbox: ``[x1, y1, x2, y2]`` float32.
        center, scale: the box centre and size ``(w, h)`` mmpose crops from (before the aspect fix).
        area: the instance area (COCO ``area``; MPII as mmpose computes it).
        head_size: PCKh normaliser, ``None`` when the layout gives none.
        raw: the annotation as a COCO keypoint annotation (for xtcocotools).
    """

    img_path: Path
    img_id: int
    ann_id: int
    width: int
    height: int
    keypoints: np.ndarray
    visible: np.ndarray
    bbox: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    area: float
    head_size: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def coco_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` of ``split`` in the COCO keypoint layout."""
    root = Path(root)
    return root / "annotations" / f"person_keypoints_{split}2017.json", root / f"{split}2017"


def mpii_paths(root: str | Path, split: str) -> tuple[Path, Path, Path]:
    """``(annotation json, image folder, head-box .mat)`` of ``split`` in mmpose's MPII layout."""
    root = Path(root)
    return root / "annotations" / f"mpii_{split}.json", root / "images", root / "annotations" / "mpii_gt_val.mat"


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise KeypointFormatError(f"{path}: not valid JSON ({e})") from None


def _check_keypoints(path: Path, what: str, values: Any, k: int, width: int, height: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(K x 2 coords, K flags)`` of a COCO ``keypoints`` list, checked against ``K`` and the image."""
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, (int, float)) for v in values):
        raise KeypointFormatError(f"{path}: {what}: 'keypoints' must be a list of numbers")
    if len(values) != 3 * k:
        if len(values) == 2 * k:
            raise KeypointFormatError(f"{path}: {what}: 'keypoints' has {len(values)} values = 2*K for K={k}: "
                                      f"the visibility flag of every keypoint is missing (expected [x, y, v] * K)")
        raise KeypointFormatError(f"{path}: {what}: 'keypoints' has {len(values)} values, expected 3*K = {3 * k}")
    arr = np.asarray(values, np.float64).reshape(k, 3)
    flags = arr[:, 2]
    if not np.isin(flags, (0, 1, 2)).all():
        bad = int(np.flatnonzero(~np.isin(flags, (0, 1, 2)))[0])
        raise KeypointFormatError(f"{path}: {what}: 'keypoints' visibility of keypoint {bad} is {flags[bad]}, "
                                  f"expected 0, 1 or 2")
    _check_inside(path, what, "keypoints", arr[:, :2], flags > 0, width, height)
    return arr[:, :2].astype(np.float32), flags.astype(np.int64)


def _check_inside(path: Path, what: str, name: str, xy: np.ndarray, labelled: np.ndarray, width: int,
                  height: int) -> None:
    outside = labelled & ((xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] > width - 1) | (xy[:, 1] > height - 1))
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise KeypointFormatError(f"{path}: {what}: '{name}' keypoint {i} at ({xy[i, 0]:g}, {xy[i, 1]:g}) is "
                                  f"outside its {width}x{height} image")


def read_coco_keypoints(ann_file: str | Path, img_dir: str | Path, num_keypoints: int | None = None,
                        padding: float = 1.25) -> tuple[list[PersonInstance], dict[str, Any]]:
    """The persons of a COCO keypoint annotation file.

    Args:
        ann_file: ``person_keypoints_*.json``.
        img_dir: the folder the images' ``file_name`` are relative to.
        num_keypoints: ``K`` (default: the length of the person category's ``keypoints`` names).
        padding: mmpose's ``GetBBoxCenterScale`` padding of the box.

    Returns:
        ``(persons, info)``; ``info`` holds ``num_keypoints``, ``categories``, ``images`` (id -> entry).

    Raises:
        FileNotFoundError: no annotation file.
        KeypointFormatError: a malformed file (names the file, annotation id and field).
    """
    from mmpose.structures.bbox import bbox_xyxy2cs

    path, img_dir = Path(ann_file), Path(img_dir)
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or \
            not isinstance(data.get("annotations"), list):
        raise KeypointFormatError(f"{path}: expected a COCO json with 'images' and 'annotations' lists")
    cats = data.get("categories") or []
    k = num_keypoints
    if k is None:
        names = next((c.get("keypoints") for c in cats if isinstance(c, dict) and c.get("keypoints")), None)
        if names is None:
            raise KeypointFormatError(f"{path}: 'categories' name no 'keypoints'; pass num_keypoints")
        k = len(names)
    images: dict[int, dict[str, Any]] = {}
    for i, im in enumerate(data["images"]):
        for key in ("id", "file_name", "width", "height"):
            if not isinstance(im, dict) or key not in im:
                raise KeypointFormatError(f"{path}: images[{i}] has no '{key}'")
        images[int(im["id"])] = im
    persons = []
    for i, ann in enumerate(data["annotations"]):
        what = f"annotation id {ann.get('id', f'#{i}')}" if isinstance(ann, dict) else f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise KeypointFormatError(f"{path}: {what} is not an object")
        for key in ("id", "image_id", "keypoints", "bbox"):
            if key not in ann:
                raise KeypointFormatError(f"{path}: {what} has no '{key}'")
        if int(ann["image_id"]) not in images:
            raise KeypointFormatError(f"{path}: {what}: 'image_id' {ann['image_id']} is not in 'images'")
        im = images[int(ann["image_id"])]
        w, h = int(im["width"]), int(im["height"])
        kp, flags = _check_keypoints(path, what, ann["keypoints"], k, w, h)
        if ann.get("iscrowd", 0) or not (flags > 0).any():
            continue  # mmpose's top-down datasets skip these too
        box = ann["bbox"]
        if not isinstance(box, (list, tuple)) or len(box) != 4 or box[2] <= 0 or box[3] <= 0:
            raise KeypointFormatError(f"{path}: {what}: 'bbox' must be [x, y, w, h] with w, h > 0, got {box!r}")
        # clipped to the image as mmpose's BaseCocoStyleDataset.parse_data_info does
        x1, y1 = np.clip(box[0], 0, w - 1), np.clip(box[1], 0, h - 1)
        x2, y2 = np.clip(box[0] + box[2], 0, w - 1), np.clip(box[1] + box[3], 0, h - 1)
        bbox = np.array([x1, y1, x2, y2], np.float32)
        center, scale = bbox_xyxy2cs(bbox, padding=padding)
        hs = ann.get("head_size")
        if hs is not None and not (isinstance(hs, (int, float)) and hs > 0):
            raise KeypointFormatError(f"{path}: {what}: 'head_size' must be a positive number, got {hs!r}")
        area = float(ann.get("area", max((x2 - x1) * (y2 - y1) * 0.53, 1.0)))
        raw = dict(id=int(ann["id"]), image_id=int(ann["image_id"]), category_id=int(ann.get("category_id", 1)),
                   bbox=[float(v) for v in box], keypoints=[float(v) for v in ann["keypoints"]], area=area,
                   iscrowd=0, num_keypoints=int((flags > 0).sum()))
        persons.append(PersonInstance(img_dir / im["file_name"], int(ann["image_id"]), int(ann["id"]), w, h, kp,
                                      flags, bbox, center.astype(np.float32), scale.astype(np.float32), area,
                                      None if hs is None else float(hs), raw))
    info = dict(num_keypoints=k, categories=cats, images=images)
    return persons, info


def read_mpii(ann_file: str | Path, img_dir: str | Path, headbox_file: str | Path | None = None,
              num_keypoints: int = 16, padding: float = 1.25) -> tuple[list[PersonInstance], dict[str, Any]]:
    """The persons of an MPII annotation file as mmpose's ``MpiiDataset`` reads it.

    Centre and scale follow mmpose: ``scale * 200`` pixels square, the centre moved down by 15/200 of it and
    shifted by -1 (MATLAB's 1-based pixels), times ``padding``. Head sizes (``0.6 * ||head box diagonal||``)
    come from ``headbox_file`` (``headboxes_src``, one box per annotation, in order) when given.

    Raises:
        FileNotFoundError: a missing file; KeypointFormatError: a malformed annotation (file, index, field).
    """
    from mmpose.structures.bbox import bbox_cs2xyxy

    path, img_dir = Path(ann_file), Path(img_dir)
    anns = _load_json(path)
    if not isinstance(anns, list):
        raise KeypointFormatError(f"{path}: expected a list of MPII annotations")
    heads = None
    if headbox_file is not None:
        from scipy.io import loadmat

        hb = Path(headbox_file)
        if not hb.is_file():
            raise FileNotFoundError(f"{hb}: MPII head-box file not found")
        try:
            boxes = loadmat(str(hb))["headboxes_src"]
        except (KeyError, ValueError, OSError) as e:
            raise KeypointFormatError(f"{hb}: no readable 'headboxes_src' ({e})") from None
        boxes = np.transpose(np.asarray(boxes, np.float64), (2, 0, 1))  # N x 2 (corners) x 2 (x, y)
        if len(boxes) != len(anns):
            raise KeypointFormatError(f"{hb}: 'headboxes_src' holds {len(boxes)} head boxes but {path} has "
                                      f"{len(anns)} annotations")
        heads = MPII_HEAD_BIAS * np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=1)
    sizes: dict[str, tuple[int, int]] = {}
    persons = []
    for i, ann in enumerate(anns):
        what = f"annotation #{i}"
        if not isinstance(ann, dict):
            raise KeypointFormatError(f"{path}: {what} is not an object")
        for key in ("image", "center", "scale", "joints", "joints_vis"):
            if key not in ann:
                raise KeypointFormatError(f"{path}: {what} has no '{key}'")
        joints = np.asarray(ann["joints"], np.float64)
        vis = np.asarray(ann["joints_vis"], np.float64).reshape(-1)
        if joints.shape != (num_keypoints, 2):
            raise KeypointFormatError(f"{path}: {what}: 'joints' has shape {joints.shape}, expected "
                                      f"({num_keypoints}, 2)")
        if len(vis) != num_keypoints:
            raise KeypointFormatError(f"{path}: {what}: 'joints_vis' has {len(vis)} flags, expected "
                                      f"{num_keypoints} (one visibility flag per joint)")
        img_path = img_dir / str(ann["image"])
        if ann["image"] not in sizes:
            if not img_path.is_file():
                raise FileNotFoundError(f"{path}: {what}: image {img_path} not found")
            with Image.open(img_path) as im:
                sizes[ann["image"]] = im.size
        w, h = sizes[ann["image"]]
        _check_inside(path, what, "joints", joints, vis > 0, w, h)
        center = np.array(ann["center"], np.float32)
        scale = np.array([ann["scale"], ann["scale"]], np.float32) * PIXEL_STD
        if center[0] != -1:
            center[1] = center[1] + 15.0 / PIXEL_STD * scale[1]
        center = center - 1
        bbox = bbox_cs2xyxy(center[None], scale[None])[0].astype(np.float32)
        area = float(max((bbox[2] - bbox[0]) * (bbox[3] - bbox[1]) * 0.53, 1.0))
        flags = np.where(vis > 0, 2, 0).astype(np.int64)
        try:
            img_id = int(str(ann["image"]).split(".")[0])
        except ValueError:
            raise KeypointFormatError(f"{path}: {what}: 'image' {ann['image']!r} is not '<number>.jpg' "
                                      f"(mmpose's MpiiDataset takes the image id from it)") from None
        raw = dict(id=i, image_id=img_id, category_id=1, iscrowd=0, area=area,
                   bbox=[float(bbox[0]), float(bbox[1]), float(bbox[2] - bbox[0]), float(bbox[3] - bbox[1])],
                   keypoints=[float(v) for xy, f in zip(joints, flags) for v in (*xy, f)],
                   num_keypoints=int((flags > 0).sum()))
        persons.append(PersonInstance(img_path, img_id, i, w, h, joints.astype(np.float32), flags, bbox,
                                      center, scale * padding, area, None if heads is None else float(heads[i]),
                                      raw))
    images = {p.img_id: dict(id=p.img_id, file_name=p.img_path.name, width=p.width, height=p.height)
              for p in persons}
    return persons, dict(num_keypoints=num_keypoints, categories=[dict(id=1, name="person")], images=images)


def fix_aspect_ratio(scale: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """mmpose ``TopdownAffine._fix_aspect_ratio``: widen the box ``(w, h)`` to ``aspect_ratio = w / h``."""
    w, h = float(scale[0]), float(scale[1])
    return np.array([w, w / aspect_ratio] if w > h * aspect_ratio else [h * aspect_ratio, h], np.float32)


def crop_persons(persons: Sequence[PersonInstance], input_size: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top-down crops of ``persons`` at ``input_size = (w, h)`` (mmpose ``TopdownAffine``, no rotation).

    Returns:
        ``(images N x h x w x 3 uint8 RGB, centers N x 2, scales N x 2 (aspect fixed), keypoints N x K x 2
        in crop coordinates)``.
    """
    import cv2
    from mmpose.structures.bbox import get_warp_matrix

    w, h = int(input_size[0]), int(input_size[1])
    cache: dict[Path, np.ndarray] = {}
    imgs, centers, scales, kps = [], [], [], []
    for p in persons:
        if p.img_path not in cache:
            if not p.img_path.is_file():
                raise FileNotFoundError(f"image {p.img_path} (annotation id {p.ann_id}) not found")
            cache = {p.img_path: np.asarray(Image.open(p.img_path).convert("RGB"))}  # sorted by image: 1 kept
        scale = fix_aspect_ratio(p.scale, w / h)
        mat = get_warp_matrix(p.center, scale, 0.0, output_size=(w, h))
        imgs.append(cv2.warpAffine(cache[p.img_path], mat, (w, h), flags=cv2.INTER_LINEAR))
        kps.append(cv2.transform(p.keypoints[None].astype(np.float32), mat)[0])
        centers.append(p.center)
        scales.append(scale)
    k = persons[0].keypoints.shape[0] if persons else 0
    return (np.stack(imgs) if imgs else np.zeros((0, h, w, 3), np.uint8), np.asarray(centers, np.float32).reshape(-1, 2),
            np.asarray(scales, np.float32).reshape(-1, 2), np.asarray(kps, np.float32).reshape(-1, k, 2))
