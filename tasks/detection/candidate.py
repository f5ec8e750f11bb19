"""Detection candidates and targets for the proxy trainer (:mod:`densenas.evaluation.proxy`).

The candidate of a NAS-FCOS (Wang et al., "NAS-FCOS: Fast Neural Architecture Search for Object
Detection", CVPR 2020) or NAS-FPN (Ghiasi, Lin, Le, CVPR 2019) search is the neck and dense head of an mmdet
single-stage detector, fed the search encoder's features (:class:`NeckHead`); the detector's own backbone is
never used. Two rewards on the proxy validation set, both always measured (:meth:`DetTargets.metrics`):

* ``neg_loss``: minus the sum of the detection losses, as NAS-FCOS rewards its candidates;
* ``ap``: COCO box AP@[.5:.95] (with ``ap50``, ``ap75``), the proxy-task reward of NAS-FPN.

Both come from one pass over the validation batches: :meth:`NeckHead.predict` returns a
:class:`DetPrediction` holding the batch's summed loss (measured in training mode with every BatchNorm in
eval mode: eval statistics, but the training-only output scaling the loss expects, e.g. FCOS
``norm_on_bbox``) and its detections (eval mode, low score threshold as in COCO evaluation).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from densenas.arch import Arch
from densenas.evaluation.common import Diverged, set_norm_eval
from densenas.space import SearchSpace, ShapeSpec

from .metrics import coco_ap, det_loss_total, pack_det_samples

DetSplit = tuple[Tensor, Sequence[Tensor], Sequence[Tensor]]
REWARDS = ("neg_loss", "ap")


@contextlib.contextmanager
def quiet_mmengine():
    """Silence mmengine's per-parameter ``init_weights`` report (INFO lines on the current logger)."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def build_detector(model_cfg: Mapping[str, Any]) -> nn.Module:
    """``mmdet.registry.MODELS.build`` in mmdet's scope (mmdet's modules and the task's registered first)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict
    from mmengine.registry import DefaultScope

    import densenas.tasks.detection.mm  # noqa: F401  (registers the NAS-FCOS / NAS-FPN modules, once)

    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope("mmdet"):
        return MODELS.build(ConfigDict(model_cfg))


def channels_of(shapes: Mapping[str, ShapeSpec] | Sequence[ShapeSpec]) -> list[int]:
    """Channels of the encoder levels, in order."""
    return [int(s.channels) for s in (shapes.values() if isinstance(shapes, Mapping) else shapes)]


def detector_model_fn(space: SearchSpace, num_classes: int | None = None, *, in_channels: Sequence[int],
                      out_indices: Sequence[int] = (6, 13, 17), detector: str = "fcos", stacked_convs: int = 4,
                      feat_channels: int | None = None, backbone: Mapping[str, Any] | None = None
                      ) -> Callable[[Arch], nn.Module]:
    """``model_fn(arch) -> detector`` for a space that carries an mmdet adapter (its ``mm_detector``: NAS-FCOS,
    NAS-FPN or a plugin's); its backbone, unused by the proxy trainer, is not pretrained. The head losses are
    the task's (:mod:`.losses`).

    Args:
        space: a detection space (``mm_detector(arch, num_classes, *, losses, backbone, in_channels, ...)``).
        num_classes: classes (default the space's ``num_classes``).
        in_channels: channels of the encoder levels the neck takes.
        out_indices: MobileNetV2 blocks of the detector's own (unused) default backbone.
        detector: ``"retinanet"`` or ``"fcos"`` head, for spaces that search no head (NAS-FPN).
        stacked_convs: convs per head tower, for those spaces.
        feat_channels: head width (default the pyramid width), for those spaces.
        backbone: a :mod:`densenas.backbones` config for the detector's own backbone (default MobileNetV2).
    """
    from .losses import head_losses

    if not callable(getattr(space, "mm_detector", None)):
        raise TypeError(f"space {getattr(space, 'name', '?')!r} ({type(space).__name__}) carries no mmdet adapter: a "
                        "detection space defines mm_detector(arch, num_classes, *, losses, backbone, in_channels, "
                        "...) (docs/architecture.md)")
    k = getattr(space, "num_classes", None) if num_classes is None else num_classes
    if k is None:
        raise ValueError(f"num_classes is required for space {space.name!r}")
    bb = dict(backbone) if backbone is not None else dict(type="mobilenet_v2", out_indices=tuple(out_indices),
                                                           pretrained=False)
    head = getattr(space, "head_detector", None) or detector  # a space that builds its own head names it

    def model_fn(arch: Arch) -> nn.Module:
        return build_detector(space.mm_detector(arch, int(k), losses=head_losses(head), backbone=bb,
                                                in_channels=in_channels, detector=detector,
                                                stacked_convs=stacked_convs, feat_channels=feat_channels))
    return model_fn


class DetPrediction(NamedTuple):
    """What :meth:`NeckHead.predict` returns for one validation batch."""

    loss: float  # the batch's summed detection loss (mmdet normalises it per batch)
    num_images: int
    detections: list  # one mmdet ``InstanceData`` per image (xyxy ``bboxes``, ``scores``, ``labels``)


class NeckHead(nn.Module):
    """A detector's neck and dense head, fed encoder features: the proxy trainer's detection candidate."""

    def __init__(self, neck: nn.Module, head: nn.Module):
        super().__init__()
        self.neck, self.head = neck, head

    def mm_losses(self, feats: Sequence[Tensor], samples: list) -> dict[str, Any]:
        """mmdet's loss dict of the head (per-level lists as mmdet gives them)."""
        return self.head.loss(tuple(self.neck(list(feats))), samples)

    def loss(self, feats: Sequence[Tensor], samples: list) -> dict[str, Tensor]:
        """``{"loss_det": sum of every mmdet loss term}``, summed as mmdet's ``parse_losses`` does."""
        return {"loss_det": det_loss_total(self.mm_losses(feats, samples))}

    def predict(self, feats: Sequence[Tensor], samples: list) -> DetPrediction:
        """The batch's loss (training mode, BatchNorm in eval mode) and detections (eval mode, not rescaled);
        leaves the module in eval mode.

        Raises:
            Diverged: a non-finite validation loss.
        """
        self.train()
        set_norm_eval(self)
        loss = det_loss_total(self.mm_losses(feats, samples))
        if not torch.isfinite(loss):
            raise Diverged(f"validation loss is {loss.item()}")
        self.eval()
        dets = self.head.predict(tuple(self.neck(list(feats))), samples, rescale=False)
        return DetPrediction(float(loss), len(samples), list(dets))

    def forward(self, *feats: Tensor) -> tuple[Tensor, ...]:
        """Raw head outputs, flattened (for MAdds counting)."""
        outs = self.head(tuple(self.neck(list(feats))))
        return tuple(t for level in outs for t in level)


def neck_head(det: nn.Module, score_thr: float | None = 0.001) -> NeckHead:
    """The :class:`NeckHead` of an mmdet detector (``neck`` and ``bbox_head`` initialised; the head's
    ``test_cfg.score_thr`` set to ``score_thr`` unless ``None``)."""
    if not (hasattr(det, "neck") and hasattr(det, "bbox_head")):
        raise TypeError(f"expected an mmdet detector with neck and bbox_head, got {type(det).__name__}")
    with quiet_mmengine():
        for part in (p for p in (det.neck, det.bbox_head) if hasattr(p, "init_weights")):
            part.init_weights()
    head = det.bbox_head
    if score_thr is not None and getattr(head, "test_cfg", None) is not None:
        head.test_cfg["score_thr"] = score_thr
    return NeckHead(det.neck, head)


def build_det_candidate(space: SearchSpace, arch: Arch, shapes: Mapping[str, ShapeSpec] | Sequence[ShapeSpec],
                        num_classes: int | None = None, *, score_thr: float | None = 0.001,
                        **detector_options: Any) -> NeckHead:
    """The :class:`NeckHead` for ``arch``: :func:`detector_model_fn` (``detector_options``: ``out_indices``,
    ``detector``, ``stacked_convs``, ``feat_channels``, ``backbone``) on the channels of ``shapes``, then
    :func:`neck_head`."""
    fn = detector_model_fn(space, num_classes, in_channels=channels_of(shapes), **detector_options)
    return neck_head(fn(arch), score_thr)


class DetTargets:
    """Ground truth of the proxy splits for the proxy trainer, and the detection reward.

    Args:
        train, val: ``(images N x 3 x H x W, [boxes n_i x 4 xyxy], [labels n_i])`` (what
            :meth:`~densenas.datasets.detfolder.DetectionFolder.load_arrays` returns; every image of the
            same, unpadded size).
        num_classes: object classes.
        reward: ``"neg_loss"`` (NAS-FCOS) or ``"ap"`` (NAS-FPN).
    """

    def __init__(self, train: DetSplit, val: DetSplit, num_classes: int, reward: str = "neg_loss"):
        if reward not in REWARDS:
            raise ValueError(f"task.reward must be one of {list(REWARDS)}, got {reward!r}")
        self.splits = {"train": train, "val": val}
        self.num_classes, self.reward_key = int(num_classes), reward
        self.img_shape = tuple(int(s) for s in train[0].shape[-2:])
        self._samples: dict[tuple[str, str], list] = {}

    def _split(self, split: str) -> DetSplit:
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r}; expected one of {sorted(self.splits)}")
        return self.splits[split]

    def images(self, split: str) -> Tensor:
        return self._split(split)[0]

    def samples(self, split: str, device: Any) -> list:
        """mmdet ``DetDataSample`` s of every image of ``split`` on ``device`` (packed once per device)."""
        key = (split, str(torch.device(device)))
        if key not in self._samples:
            _, boxes, labels = self._split(split)
            self._samples[key] = pack_det_samples(boxes, labels, self.img_shape, device=device)
        return self._samples[key]

    def batch(self, split: str, idx: Tensor, device: Any) -> list:
        """The ``DetDataSample`` s of images ``idx``."""
        samples = self.samples(split, device)
        return [samples[i] for i in idx.tolist()]

    def metrics(self, preds: list[DetPrediction], split: str) -> dict[str, float]:
        """``neg_loss`` (the image-weighted mean batch loss, negated) and ``ap``, ``ap50``, ``ap75``."""
        _, boxes, labels = self._split(split)
        total, n, dets = 0.0, 0, []
        for p in preds:
            total += p.loss * p.num_images
            n += p.num_images
            dets += p.detections
        if n != len(boxes):
            raise ValueError(f"predictions cover {n} images of split {split!r}, which has {len(boxes)}")
        ap = coco_ap(dets, (list(boxes), list(labels)), self.num_classes, [self.img_shape] * n)
        return {"neg_loss": -total / n, **ap}

    def reward(self, metrics: Mapping[str, float]) -> float:
        """The chosen reward (``neg_loss`` or ``ap``) of ``metrics``."""
        return float(metrics[self.reward_key])
