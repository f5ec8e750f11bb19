"""Keypoint metrics of a search's validation split, with mmpose's and xtcocotools' own functions.

* PCKh@0.5 and PCKh@0.1 (MPII; Andriluka et al., CVPR 2014): mmpose's ``keypoint_pck_accuracy`` with the
  distance normalised by the head size, over labelled keypoints (``v > 0``), the mean of per-keypoint
  accuracies, as mmpose's ``PCKAccuracy(norm_item='head')``.
* COCO keypoint AP and AR (OKS with the set's sigmas): xtcocotools' ``COCOeval``, called as mmpose's
  ``CocoMetric`` calls it (``score_mode='bbox_keypoint'`` with ground-truth boxes of score 1, keypoint
  score threshold 0.2, OKS NMS at 0.9, ``use_area=True``).

Predictions come from the heatmaps through the ``decode`` of the search's mmpose codec (``data.codec``:
``MSRAHeatmap``'s arg-max + quarter-pixel step, DARK's Taylor step, Zhang et al., CVPR 2020, or UDP's, Huang
et al., CVPR 2020; :mod:`.data`) in crop coordinates, mapped back to the image as ``TopdownPoseEstimator``
does. Under the flip test (:func:`flip_back`) the heatmaps are first averaged with the flipped image's,
flipped back, as mmpose's ``HeatmapHead.predict`` does.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np
from torch import Tensor

KEYPOINT_SCORE_THR = 0.2  # mmpose CocoMetric defaults
NMS_THR = 0.9


def decode_heatmaps(heatmaps: Tensor | np.ndarray, codec: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(keypoints N x K x 2 in crop coordinates, scores N x K)`` by the codec's ``decode``."""
    hm = heatmaps.detach().float().cpu().numpy() if isinstance(heatmaps, Tensor) else np.asarray(heatmaps)
    kps, scores = zip(*(codec.decode(h) for h in hm)) if len(hm) else ((), ())
    k = hm.shape[1]
    return (np.concatenate(kps).reshape(-1, k, 2).astype(np.float64),
            np.concatenate(scores).reshape(-1, k).astype(np.float64))


def flip_back(heatmaps: Tensor, flip_indices: Sequence[int], shift_heatmap: bool) -> Tensor:
    """The heatmaps of horizontally flipped crops in the unflipped crop's frame: mmpose's ``flip_heatmaps``
    (``flip_mode='heatmap'``: mirror the columns, swap left/right keypoints by ``flip_indices``, and with
    ``shift_heatmap`` move every column one cell right), the function ``HeatmapHead.predict`` flip-tests with."""
    from mmpose.models.utils.tta import flip_heatmaps

    return flip_heatmaps(heatmaps, flip_indices=list(flip_indices), flip_mode="heatmap",
                         shift_heatmap=bool(shift_heatmap))


def to_image(keypoints: np.ndarray, centers: np.ndarray, scales: np.ndarray, input_size: Sequence[int]
             ) -> np.ndarray:
    """Crop coordinates -> image coordinates (``input_size = (w, h)``), as mmpose's top-down estimator."""
    size = np.asarray(input_size, np.float64)
    return keypoints / size * scales[:, None] + centers[:, None] - 0.5 * scales[:, None]


def pckh(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head_size: np.ndarray, thr: float) -> float:
    """mmpose's ``keypoint_pck_accuracy`` normalised by the head size (mean of per-keypoint accuracies)."""
    from mmpose.evaluation.functional import keypoint_pck_accuracy

    norm = np.repeat(np.asarray(head_size, np.float64).reshape(-1, 1), 2, axis=1)
    _, acc, _ = keypoint_pck_accuracy(pred, gt, np.asarray(visible) > 0, thr, norm)
    return float(acc)


def coco_keypoint_ap(pred: np.ndarray, scores: np.ndarray, anns: list[dict[str, Any]],
                     images: list[dict[str, Any]], sigmas: np.ndarray, areas: np.ndarray | None = None
                     ) -> dict[str, float]:
    """COCO keypoint AP / AP50 / AP75 / AR of one prediction per ground-truth person (top-down).

    Args:
        pred: ``N x K x 2`` image coordinates; scores: ``N x K`` keypoint scores.
        anns: the ``N`` COCO annotations (``id``, ``image_id``, ``keypoints``, ``bbox``, ``area``, ...).
        images: the COCO image entries they refer to.
        sigmas: OKS sigmas (``K``).
        areas: per-prediction areas for OKS NMS (default: the annotations' areas).
    """
    from mmpose.evaluation.functional import oks_nms
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    k = pred.shape[1]
    gt = dict(images=[dict(id=im["id"], width=im["width"], height=im["height"]) for im in images],
              annotations=[dict(a, category_id=1) for a in anns],
              categories=[dict(id=1, name="person", keypoints=[str(i) for i in range(k)])])
    by_img: dict[int, list[dict[str, Any]]] = {}
    for i, a in enumerate(anns):
        s = scores[i]
        good = s > KEYPOINT_SCORE_THR
        score = float(s[good].mean()) if good.any() else 0.0  # bbox score (1) x mean confident keypoint score
        by_img.setdefault(int(a["image_id"]), []).append(dict(
            keypoints=np.concatenate([pred[i], s[:, None]], 1), score=score,
            area=float(a["area"] if areas is None else areas[i]), image_id=int(a["image_id"])))
    results = []
    for items in by_img.values():
        keep = oks_nms(items, NMS_THR, sigmas=np.asarray(sigmas))
        results += [dict(image_id=items[j]["image_id"], category_id=1, score=items[j]["score"],
                         keypoints=items[j]["keypoints"].reshape(-1).tolist()) for j in keep]
    with contextlib.redirect_stdout(io.StringIO()):  # xtcocotools prints its progress and summary
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "keypoints", np.asarray(sigmas), True)
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    st = [max(float(v), 0.0) for v in ev.stats]  # -1: nothing to evaluate
    return {"ap": st[0], "ap50": st[1], "ap75": st[2], "ar": st[5]}


def keypoint_metrics(pred: np.ndarray, scores: np.ndarray, split: Any, sigmas: np.ndarray) -> dict[str, float]:
    """``pckh05``, ``pckh01`` (head-normalised; bbox-normalised ``pck05``/``pck01`` when no head size is
    known), COCO ``ap``, ``ap50``, ``ap75``, ``ar`` of image-coordinate predictions of a whole split."""
    norm = split.head_size
    if np.isnan(norm).any():  # a layout without head sizes: PCK normalised by the box instead
        out = {"pck05": pckh(pred, split.keypoints, split.visible, split.bbox_size, 0.5),
               "pck01": pckh(pred, split.keypoints, split.visible, split.bbox_size, 0.1)}
        out.update(pckh05=out["pck05"], pckh01=out["pck01"])
    else:
        out = {"pckh05": pckh(pred, split.keypoints, split.visible, norm, 0.5),
               "pckh01": pckh(pred, split.keypoints, split.visible, norm, 0.1)}
    areas = np.prod(split.scales, axis=1)  # as CocoMetric: the crop box area when the sample has one
    out.update(coco_keypoint_ap(pred, scores, split.anns, split.images_info, sigmas, areas))
    return out


def keypoint_reward(metrics: dict[str, float]) -> float:
    """The mean of PCKh@0.5 and PCKh@0.1: the first rewards finding the joint, the second placing it
    precisely (the two figures the paper reports on MPII)."""
    return 0.5 * (float(metrics["pckh05"]) + float(metrics["pckh01"]))
