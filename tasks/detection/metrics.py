"""Object-detection task: mmdet data samples, the loss reward, COCO box AP and Kendall's tau.

Used by the NAS-FCOS / NAS-FPN searches (:mod:`densenas.evaluation.proxy` with :mod:`.candidate`):

* NAS-FCOS (Wang, Gao, Chen, Wang, Tian, Shen, "NAS-FCOS: Fast Neural Architecture Search for Object
  Detection", CVPR 2020) rewards a candidate with the *negative sum of its losses* on the proxy
  validation set (:func:`det_loss_reward`), which correlates with AP but is far cheaper and smoother at
  tiny training budgets;
* NAS-FPN (Ghiasi, Lin, Le, CVPR 2019) rewards with the AP of the proxy task (:func:`coco_ap`, computed
  with pycocotools exactly as mmdet's ``CocoMetric`` does: AP@[.5:.95], AP50, AP75).

"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["pack_det_samples", "det_loss_total", "det_loss_reward", "coco_ap"]


def pack_det_samples(boxes: Sequence[Tensor], labels: Sequence[Tensor], img_shape: tuple[int, int], *,
                     device: str | torch.device | None = None) -> list:
    """Wrap per-image ground truth into mmdet ``DetDataSample`` s for ``bbox_head.loss`` / ``predict``.

    The images are assumed already resized to ``img_shape`` and not padded (the proxy arrays of
    :meth:`densenas.datasets.detfolder.DetectionFolder.load_arrays`), so ``ori_shape``, ``pad_shape`` and
    ``batch_input_shape`` equal ``img_shape`` and ``scale_factor`` is ``(1.0, 1.0)``.

    Args:
        boxes: per image, ``(n_i, 4)`` float boxes ``x1, y1, x2, y2`` in pixels of ``img_shape``.
        labels: per image, ``(n_i,)`` 0-based class indices.
        img_shape: ``(height, width)`` of every image.
        device: move the ground truth there (where the head's outputs will be).

    Returns:
        One ``DetDataSample`` per image with ``gt_instances.bboxes`` / ``.labels`` and the metainfo mmdet's
        heads read.
    """
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} box tensors but {len(labels)} label tensors")
    shape = (int(img_shape[0]), int(img_shape[1]))
    samples = []
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        b = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4)
        lab = torch.as_tensor(lab, dtype=torch.long).reshape(-1)
        if len(b) != len(lab):
            raise ValueError(f"image {i}: {len(b)} boxes but {len(lab)} labels")
        s = DetDataSample(metainfo=dict(img_id=i, img_shape=shape, ori_shape=shape, pad_shape=shape,
                                        batch_input_shape=shape, scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=b, labels=lab)
        samples.append(s if device is None else s.to(device))
    return samples


def det_loss_total(losses: Mapping[str, Any]) -> Tensor:
    """Sum of every loss term of an mmdet loss dict (keys containing ``loss``; per-level lists summed),
    as mmdet's ``BaseModel.parse_losses`` does."""
    terms = []
    for key, value in losses.items():
        if "loss" not in key:
            continue
        if isinstance(value, Tensor):
            terms.append(value.mean())
        elif isinstance(value, (list, tuple)):
            terms.extend(v.mean() for v in value)
        else:
            raise TypeError(f"loss {key!r} is a {type(value).__name__}, not a tensor or a list of tensors")
    if not terms:
        raise ValueError(f"no loss terms in {sorted(losses)}")
    return torch.stack([t.float() for t in terms]).sum()


def det_loss_reward(losses: Mapping[str, Any]) -> float:
    """The NAS-FCOS reward: minus the sum of the loss terms (higher is better)."""
    return -float(det_loss_total(losses).detach())


def _field(pred: Any, name: str) -> np.ndarray:
    inst = getattr(pred, "pred_instances", pred)  # a DetDataSample or its InstanceData / a dict
    value = inst[name] if isinstance(inst, Mapping) else getattr(inst, name)
    return torch.as_tensor(value).detach().float().cpu().numpy()


def coco_ap(predictions: Sequence[Any], gt: tuple[Sequence[Tensor], Sequence[Tensor]],
            classes: int | Sequence[str], img_shapes: Sequence[tuple[int, int]] | None = None
            ) -> dict[str, float]:
    """COCO bbox AP of ``predictions`` against ``gt`` (pycocotools, as mmdet's ``CocoMetric``).

    Args:
        predictions: per image, an ``InstanceData`` (what ``bbox_head.predict`` returns), a
            ``DetDataSample`` with ``pred_instances``, or a dict with ``bboxes`` (xyxy), ``scores`` and
            ``labels`` (0-based).
        gt: ``(boxes, labels)``: per image, ``(n_i, 4)`` xyxy boxes and ``(n_i,)`` 0-based labels.
        classes: number of classes or their names.
        img_shapes: per image ``(height, width)`` (only stored in the COCO image records; default 1x1).

    Returns:
        ``ap`` (AP@[.5:.95]), ``ap50`` and ``ap75`` in ``[0, 1]``; 0 for a metric with no detection at
        all. Classes without ground truth are left out of the mean, as in pycocotools.

    Raises:
        ValueError: mismatched lengths, or no ground-truth box at all (AP is undefined).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_boxes, gt_labels = gt
    if not (len(predictions) == len(gt_boxes) == len(gt_labels)):
        raise ValueError(f"{len(predictions)} predictions for {len(gt_boxes)} images "
                         f"({len(gt_labels)} label tensors)")
    num_classes = classes if isinstance(classes, int) else len(classes)
    names = [str(c) for c in range(num_classes)] if isinstance(classes, int) else [str(c) for c in classes]
    images, anns, dets = [], [], []
    for i, (pred, boxes, labels) in enumerate(zip(predictions, gt_boxes, gt_labels)):
        h, w = img_shapes[i] if img_shapes is not None else (1, 1)
        images.append({"id": i + 1, "height": int(h), "width": int(w)})
        for b, lab in zip(torch.as_tensor(boxes).float().reshape(-1, 4).tolist(),
                          torch.as_tensor(labels).reshape(-1).tolist()):
            bw, bh = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(lab) + 1,
                         "bbox": [b[0], b[1], bw, bh], "area": bw * bh, "iscrowd": 0})
        pb, ps, pl = _field(pred, "bboxes").reshape(-1, 4), _field(pred, "scores"), _field(pred, "labels")
        for b, s, lab in zip(pb.tolist(), ps.tolist(), pl.tolist()):
            dets.append({"image_id": i + 1, "category_id": int(lab) + 1, "score": float(s),
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    if not anns:
        raise ValueError("no ground-truth boxes: AP is undefined")
    if not dets:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        coco_gt = COCO()
        coco_gt.dataset = {"info": {}, "licenses": [], "images": images, "annotations": anns,
                           "categories": [{"id": c + 1, "name": n} for c, n in enumerate(names)]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: max(float(ev.stats[j]), 0.0) for k, j in (("ap", 0), ("ap50", 1), ("ap75", 2))}
